"""The embedded Prefect server's launcher (docpipe.runtime.prefect_server)."""

from __future__ import annotations

from typing import Any

import pytest

from docpipe.home import prefect_auth_headers

pytestmark = pytest.mark.e2e


def test_the_servers_task_queue_looks_for_due_work_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Docket's default, four looks a second, was a third of an idle server's CPU."""
    from datetime import timedelta

    import prefect.server.api.background_workers as background_workers
    from docket import Docket, Worker

    from docpipe.runtime.prefect_server import tune_docket

    monkeypatch.setattr(background_workers, "Worker", Worker)
    assert tune_docket(timedelta(seconds=1)) is True
    worker = background_workers.Worker(Docket(name="tuned", url="memory://"))
    assert isinstance(worker, Worker)
    assert worker.scheduling_resolution == timedelta(seconds=1)
    assert worker.minimum_check_interval == timedelta(seconds=1)


def test_a_prefect_that_builds_the_worker_elsewhere_runs_untuned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect.server.api.background_workers as background_workers

    from docpipe.runtime.prefect_server import tune_docket

    monkeypatch.delattr(background_workers, "Worker")
    assert tune_docket() is False
    assert not hasattr(background_workers, "Worker")


def test_a_prefect_without_the_transaction_hook_runs_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contextlib import asynccontextmanager

    from prefect.server.database.configurations import AioSqliteConfiguration

    from docpipe.runtime.prefect_server import immediate_sqlite_transactions

    @asynccontextmanager
    async def begin_transaction(self: Any, session: Any) -> Any:
        yield None

    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", begin_transaction)
    assert immediate_sqlite_transactions() is False
    assert AioSqliteConfiguration.begin_transaction is begin_transaction


@pytest.mark.e2e
def test_concurrent_writers_wait_their_turn_instead_of_getting_a_503(stack: Any) -> None:
    """Flow runs created and moved on all at once, as batches arriving together do.

    Prefect's server on SQLite used to answer most of these with a 503 (a transaction that
    read, then found another writer had been first), and its client waits 2 s to retry:
    the stall a batch's start sometimes met. Here the server is asked with no retrying.
    """
    import asyncio

    import httpx

    writers, rounds = 40, 3

    async def create_runs() -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(
            base_url=stack.settings.prefect_api_url,
            headers=prefect_auth_headers(stack.settings),
            timeout=60,
        ) as client:
            flow = (await client.post("/flows/", json={"name": "busy-writers"})).json()

            async def one() -> None:
                created = await client.post(
                    "/flow_runs/", json={"flow_id": flow["id"], "state": {"type": "PENDING"}}
                )
                statuses.append(created.status_code)
                if created.is_success:
                    for state in ("RUNNING", "COMPLETED"):
                        moved = await client.post(
                            f"/flow_runs/{created.json()['id']}/set_state",
                            json={"state": {"type": state}, "force": True},
                        )
                        statuses.append(moved.status_code)

            for _ in range(rounds):
                await asyncio.gather(*(one() for _ in range(writers)))
        return statuses

    statuses = asyncio.run(create_runs())
    assert statuses.count(503) == 0, f"{statuses.count(503)} of {len(statuses)} answers were 503"
    assert len(statuses) == writers * rounds * 3
    assert all(200 <= status < 300 for status in statuses), sorted(set(statuses))


def test_a_prefect_that_creates_its_database_elsewhere_runs_without_the_run_list_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.server.database.interface import PrefectDBInterface

    from docpipe.runtime.prefect_server import index_run_list

    monkeypatch.delattr(PrefectDBInterface, "create_db")
    assert index_run_list() is False
