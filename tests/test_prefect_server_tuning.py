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
