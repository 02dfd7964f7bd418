"""Heartbeats are written and judged by the database's clock, not by each machine's."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from docpipe import batches
from docpipe.dispatch import dispatch
from docpipe.models import utcnow
from docpipe.recovery import run_recovery_pass
from tests.helpers import settings_with
from tests.unit.prefect_stand_in import PrefectStandIn
from tests.unit.test_recovery_decisions import accepted_batch, stored

# Far past stale_after_seconds either way: a machine whose clock is an hour off.
SKEW = timedelta(hours=1)


@contextmanager
def process_clock(offset: timedelta) -> Iterator[None]:
    """This process's clock, `offset` from the true time, as another machine's may be: every
    docpipe module's `utcnow` (the database's clock is left as it is)."""

    def skewed() -> datetime:
        return utcnow() + offset

    with pytest.MonkeyPatch.context() as patch:
        for module in list(sys.modules.values()):
            if module.__name__.startswith("docpipe") and getattr(module, "utcnow", None) is utcnow:
                patch.setattr(module, "utcnow", skewed)
        yield


def started_by_a_worker(batch_id: str, prefect: PrefectStandIn, clock: timedelta) -> str:
    """The batch's flow run started on a worker whose clock is `clock` off, and beat once."""
    assert dispatch() == [batch_id]
    flow_run_id = stored(batch_id).flow_run_id
    assert flow_run_id is not None
    prefect.flow_runs[flow_run_id].state = "RUNNING"
    with process_clock(clock):
        batches.begin_processing(batch_id, flow_run_id)
        batches.heartbeat(batch_id)
    return flow_run_id


def test_a_live_batch_on_a_worker_whose_clock_is_slow_is_neither_restarted_nor_doubled(
    database: str, home: Path, prefect: PrefectStandIn
) -> None:
    batch_id = accepted_batch(home)
    flow_run_id = started_by_a_worker(batch_id, prefect, -SKEW)

    # Judged by an API whose clock is right, and by one whose clock is fast.
    for judge in (timedelta(0), SKEW):
        with process_clock(judge):
            report = run_recovery_pass()
            refused = batches.refusal(batch_id, "a-second-flow-run")
        assert (report.resubmitted, report.failed, prefect.crashed) == ([], [], [])
        assert refused == f"batch {batch_id} is being processed by flow run {flow_run_id}"
    assert len(prefect.runs_of(batch_id)) == 1


def test_a_batch_whose_worker_clock_is_fast_is_still_restarted_once_it_stops_beating(
    database: str, home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, stale_after_seconds=2)
    batch_id = accepted_batch(home)
    flow_run_id = started_by_a_worker(batch_id, prefect, SKEW)
    assert run_recovery_pass().resubmitted == []  # it just beat

    time.sleep(2.5)  # and then its worker died

    report = run_recovery_pass()
    assert report.resubmitted == [batch_id]
    assert prefect.crashed == [(flow_run_id, "its flow run stopped reporting for over 2 s")]
    assert batches.refusal(batch_id, "a-second-flow-run") is None


def test_a_run_that_never_beats_is_restarted_by_the_databases_clock_alone(
    database: str, home: Path, monkeypatch: pytest.MonkeyPatch, prefect: PrefectStandIn
) -> None:
    settings_with(monkeypatch, stale_after_seconds=2)
    batch_id = accepted_batch(home)
    assert dispatch() == [batch_id]
    flow_run_id = stored(batch_id).flow_run_id
    assert flow_run_id is not None
    prefect.flow_runs[flow_run_id].state = "RUNNING"  # and it dies before its first beat

    assert run_recovery_pass().resubmitted == []  # its first beat may be on its way
    time.sleep(2.5)
    assert run_recovery_pass().resubmitted == [batch_id]
