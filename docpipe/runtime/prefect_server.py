"""The embedded Prefect server: `prefect server start`, with three changes.

- Its task queue looks for due work once a second instead of four times (`tune_docket`).
- On SQLite, its transactions take the write lock when they begin, so two writers wait
  for each other instead of one failing with a 503 (`immediate_sqlite_transactions`).
- On SQLite, its flow runs get the index the UI's run list is sorted by (`index_run_list`).

The server's housekeeping runs through docket, a task queue in its own process, whose
worker looks for due tasks four times a second with no Prefect setting to change it: a
large share of an idle server's CPU (figures in docs/performance.md). The housekeeping
runs every 30-60 s, so a second more before one starts changes nothing a user sees.

Run it as `python -m docpipe.runtime.prefect_server --host <host> --port <port>`.
"""

from __future__ import annotations

import functools
import logging
import sys
from datetime import timedelta

log = logging.getLogger("docpipe.runtime.prefect_server")
DOCKET_POLL = timedelta(seconds=1)


def tune_docket(poll: timedelta = DOCKET_POLL) -> bool:
    """Make the server's docket worker look for due tasks every `poll`; whether it could.

    Prefect builds the worker as `Worker(docket)` in one module; that name is bound to
    docket's own Worker with two of its documented parameters set. If a later Prefect
    builds it elsewhere, the server runs as it is, with Prefect's defaults.
    """
    import prefect.server.api.background_workers as background_workers
    from docket import Worker

    if getattr(background_workers, "Worker", None) is not Worker:
        log.warning("Prefect no longer builds docket's worker where docpipe expects it")
        return False
    tuned = functools.partial(Worker, scheduling_resolution=poll, minimum_check_interval=poll)
    setattr(background_workers, "Worker", tuned)  # noqa: B010 (a module's global, on purpose)
    return True


def immediate_sqlite_transactions() -> bool:
    """Begin every SQLite transaction of the server's with `BEGIN IMMEDIATE`; whether it could.

    Prefect begins a transaction `DEFERRED` unless its caller asks for row locks. In WAL
    mode, such a transaction that reads and then writes, after another connection wrote
    in between, fails at once with SQLITE_BUSY, without waiting `busy_timeout`: it
    cannot write on top of the snapshot it read. Prefect's server answers that with a
    503, and its client tries again 2 s later. Creating a flow run is such a
    transaction, so a batch that met it started 2 s late. `IMMEDIATE` takes the write
    lock at the start, where a writer waits its turn (up to `busy_timeout`) instead of
    failing. Reads outside a transaction are untouched, and SQLite has one writer at
    a time either way.
    """
    import inspect
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from prefect.server.database.configurations import AioSqliteConfiguration
    from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

    original = AioSqliteConfiguration.begin_transaction
    if getattr(original, "_docpipe_immediate", False):
        return True
    if "with_for_update" not in inspect.signature(original).parameters:
        log.warning("Prefect's SQLite transactions are no longer where docpipe expects them")
        return False

    @asynccontextmanager
    async def begin_transaction(
        self: AioSqliteConfiguration, session: AsyncSession, with_for_update: bool = False
    ) -> AsyncIterator[AsyncSessionTransaction]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction._docpipe_immediate = True  # type: ignore[attr-defined]
    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]
    return True


RUN_LIST_INDEX = "docpipe_ix_flow_run__coalesce_start_time_desc"


def index_run_list() -> bool:
    """Once Prefect's migrations have run, index its SQLite flow runs as the UI's run list
    sorts them (newest start, or expected start, first); whether it could.

    Prefect's model declares that index, but its SQLite migrations leave it out, so every
    look at the list read and sorted every flow run the server ever had, and the ingest
    schedule alone adds one a minute. Created if missing at every start, so a Prefect
    upgrade that rebuilds the table gets it back; PostgreSQL has Prefect's own.
    """
    from prefect.server.database.configurations import AioSqliteConfiguration
    from prefect.server.database.interface import PrefectDBInterface
    from sqlalchemy import text

    original = getattr(PrefectDBInterface, "create_db", None)
    if original is None:
        log.warning("Prefect no longer creates its database where docpipe expects it")
        return False
    if getattr(original, "_docpipe_indexed", False):
        return True

    async def create_db(self: PrefectDBInterface) -> None:
        await original(self)
        if isinstance(self.database_config, AioSqliteConfiguration):
            async with (await self.engine()).begin() as connection:
                await connection.execute(
                    text(
                        f"CREATE INDEX IF NOT EXISTS {RUN_LIST_INDEX} "
                        "ON flow_run (coalesce(start_time, expected_start_time) DESC)"
                    )
                )

    create_db._docpipe_indexed = True  # type: ignore[attr-defined]
    PrefectDBInterface.create_db = create_db  # type: ignore[method-assign]
    return True


def main(argv: list[str] | None = None) -> None:
    import argparse

    from prefect.cli import app

    parser = argparse.ArgumentParser(
        prog="python -m docpipe.runtime.prefect_server", description=__doc__
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    tune_docket()
    immediate_sqlite_transactions()
    index_run_list()
    sys.argv = ["prefect", "server", "start", "--host", args.host, "--port", str(args.port)]
    app()


if __name__ == "__main__":
    main()
