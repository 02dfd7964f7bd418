"""The embedded Prefect server: `prefect server start`, with two of its habits changed.

- Its background-task queue is polled once a second, not four times. Prefect's server
  runs its housekeeping (late runs, schedules, cancellation clean-up, ...) through
  docket, a task queue in the server's own process, whose worker looks for due tasks
  every 250 ms, by default and with no Prefect setting to change it: measured here,
  that was a third of an idle server's CPU (0.92 CPU s a minute, 0.62 at one look a
  second). The housekeeping runs every 30-60 s (see `docpipe.stack.service_env`), so a
  second more before one starts changes nothing a user sees; a task due at once is not
  waiting for the look, because the worker's blocking read returns as soon as one
  arrives (measured: 2-50 ms).
- A request that meets a busy SQLite database is told to retry in 0.1 s, not 2 s (see
  `retry_soon_when_busy`): in one run, 3 batches of 14 started 2-2.5 s late; after, none
  of 17 was more than 0.9 s late.

Both change where Prefect builds these things, by name; if a later Prefect builds them
elsewhere, the server runs as Prefect made it and logs a warning.

Run it as `python -m docpipe.prefect_server --host <host> --port <port>`.
"""

from __future__ import annotations

import functools
import logging
import sys
from datetime import timedelta
from typing import Any

log = logging.getLogger("docpipe.prefect_server")
DOCKET_POLL = timedelta(seconds=1)
BUSY_RETRY_AFTER = 0.1


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


def retry_soon_when_busy(retry_after: float = BUSY_RETRY_AFTER) -> bool:
    """Answer a request that hit a busy database with `Retry-After: <retry_after>`.

    On SQLite, a write that meets another one may fail at once instead of waiting its
    turn; Prefect's server then answers 503, and its clients retry, by default after
    2 s: a batch that met one started 2 s late. Given a Retry-After, they retry then.
    Whether it could (see `tune_docket`).
    """
    import prefect.server.api.server as server

    handler = getattr(server, "custom_internal_exception_handler", None)
    if handler is None:
        log.warning("Prefect no longer handles server errors where docpipe expects it")
        return False

    async def handle(request: Any, exc: Exception) -> Any:
        response = await handler(request, exc)
        if response.status_code == 503 and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    setattr(server, "custom_internal_exception_handler", handle)  # noqa: B010
    return True


def main(argv: list[str] | None = None) -> None:
    import argparse

    from prefect.cli import app

    parser = argparse.ArgumentParser(prog="python -m docpipe.prefect_server", description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    tune_docket()
    retry_soon_when_busy()
    sys.argv = ["prefect", "server", "start", "--host", args.host, "--port", str(args.port)]
    app()


if __name__ == "__main__":
    main()
