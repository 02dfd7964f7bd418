"""The embedded Prefect server's launcher (docpipe.prefect_server)."""

from __future__ import annotations

import pytest


def test_the_servers_task_queue_looks_for_due_work_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Docket's default, four looks a second, was a third of an idle server's CPU."""
    from datetime import timedelta

    import prefect.server.api.background_workers as background_workers
    from docket import Docket, Worker

    from docpipe.prefect_server import tune_docket

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

    from docpipe.prefect_server import tune_docket

    monkeypatch.delattr(background_workers, "Worker")
    assert tune_docket() is False
    assert not hasattr(background_workers, "Worker")


def test_a_request_that_meets_a_busy_database_is_retried_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect's clients wait 2 s before retrying a 503, unless told a time: a batch
    whose submission met a busy SQLite started 2 s late."""
    import asyncio
    import sqlite3

    import prefect.server.api.server as server
    import sqlalchemy.exc
    from starlette.requests import Request

    from docpipe.prefect_server import retry_soon_when_busy

    monkeypatch.setattr(
        server, "custom_internal_exception_handler", server.custom_internal_exception_handler
    )
    assert retry_soon_when_busy(0.1) is True
    request = Request({"type": "http", "method": "POST", "path": "/api/flow_runs/", "headers": []})
    busy = sqlalchemy.exc.OperationalError(
        "INSERT", {}, sqlite3.OperationalError("database is locked")
    )
    handle = server.custom_internal_exception_handler

    response = asyncio.run(handle(request, busy))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "0.1"

    broken = asyncio.run(handle(request, RuntimeError("a bug")))
    assert broken.status_code == 500
    assert "Retry-After" not in broken.headers
