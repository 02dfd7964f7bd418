"""What a recovery pass decides for each open batch, against a stand-in for Prefect."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from docpipe import batches
from docpipe.db import session_scope
from docpipe.dispatch import dispatch
from docpipe.models import Batch, BatchStatus, utcnow
from docpipe.recovery import run_recovery_pass
from docpipe.runtime.stack import free_port
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import make_tenant, settings_with
from tests.unit.prefect_stand_in import PrefectStandIn


def accepted_batch(home: Path) -> str:
    """A one-page batch as an upload leaves it: stored, Queued, not yet handed to Prefect."""
    from docpipe.config import get_settings

    tenant_id, _ = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    page = io.BytesIO(documents.document(documents.phrase(1), "png"))
    with stage_files([("a.png", page)], get_settings()) as staged:
        return batches.create_batch(tenant, staged).batch_id


def stored(batch_id: str) -> Batch:
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        return batch


def running(batch_id: str, prefect: PrefectStandIn, *, beat_seconds_ago: float) -> str:
    """The batch was handed to Prefect, and its flow run started and last beat this long
    ago; its flow run id."""
    assert dispatch() == [batch_id]
    flow_run_id = stored(batch_id).flow_run_id
    assert flow_run_id is not None
    prefect.flow_runs[flow_run_id].state = "RUNNING"
    batches.begin_processing(batch_id, flow_run_id)
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.heartbeat_at = utcnow() - timedelta(seconds=beat_seconds_ago)
    return flow_run_id


def test_a_batch_accepted_while_prefect_was_down_is_submitted_once_it_answers(
    home: Path, prefect: PrefectStandIn
) -> None:
    prefect.reachable = False
    batch_id = accepted_batch(home)
    assert dispatch() == []

    report = run_recovery_pass()
    assert not report.prefect_reachable and report.submitted == []
    assert stored(batch_id).flow_run_id is None

    prefect.reachable = True
    assert run_recovery_pass().submitted == [batch_id]
    (run,) = prefect.runs_of(batch_id)
    assert run.number == 1
    assert run_recovery_pass().submitted == []  # once


def test_a_run_that_stopped_beating_is_marked_crashed_and_resubmitted(
    home: Path, prefect: PrefectStandIn
) -> None:
    batch_id = accepted_batch(home)
    flow_run_id = running(batch_id, prefect, beat_seconds_ago=91)

    report = run_recovery_pass()

    assert report.resubmitted == [batch_id]
    assert prefect.crashed == [(flow_run_id, "its flow run stopped reporting for over 90 s")]
    assert [r.number for r in prefect.runs_of(batch_id)] == [1, 2]
    assert stored(batch_id).flow_run_id != flow_run_id


def test_a_run_that_still_beats_is_left_alone(home: Path, prefect: PrefectStandIn) -> None:
    batch_id = accepted_batch(home)
    running(batch_id, prefect, beat_seconds_ago=30)

    report = run_recovery_pass()

    assert (report.resubmitted, report.failed, prefect.crashed) == ([], [], [])
    assert len(prefect.runs_of(batch_id)) == 1


def test_a_run_that_ended_without_finishing_its_batch_is_resubmitted(
    home: Path, prefect: PrefectStandIn
) -> None:
    batch_id = accepted_batch(home)
    flow_run_id = running(batch_id, prefect, beat_seconds_ago=0)
    prefect.flow_runs[flow_run_id].state = "CRASHED"

    assert run_recovery_pass().resubmitted == [batch_id]
    assert prefect.crashed == []  # Prefect knew already


def test_a_batch_that_keeps_crashing_ends_failed_after_max_submissions(
    home: Path, prefect: PrefectStandIn
) -> None:
    batch_id = accepted_batch(home)
    for _ in range(3):  # DOCPIPE_MAX_SUBMISSIONS
        flow_run_id = stored(batch_id).flow_run_id or running(batch_id, prefect, beat_seconds_ago=0)
        prefect.flow_runs[flow_run_id].state = "CRASHED"
        run_recovery_pass()

    batch = stored(batch_id)
    assert batch.status == BatchStatus.FAILED
    assert batch.error == (
        "gave up after 3 flow runs: its flow run ended crashed without finishing the batch"
    )
    assert len(prefect.runs_of(batch_id)) == 3
    assert run_recovery_pass().resubmitted == []


def test_a_cancelled_batch_is_left_alone(home: Path, prefect: PrefectStandIn) -> None:
    batch_id = accepted_batch(home)
    flow_run_id = running(batch_id, prefect, beat_seconds_ago=500)
    batches.mark_cancelled(stored(batch_id).tenant_id, batch_id)

    report = run_recovery_pass()

    assert (report.resubmitted, report.failed, prefect.crashed) == ([], [], [])
    assert prefect.flow_runs[flow_run_id].state == "RUNNING"


def test_a_store_that_does_not_answer_skips_the_sweep_and_nothing_else(
    home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The orphan sweep lists the store; the pass's other work needs only the database and
    Prefect, so a storage outage does not hold back a waiting batch."""
    prefect.reachable = False
    batch_id = accepted_batch(home)
    prefect.reachable = True
    settings_with(
        monkeypatch,
        storage_url="s3://docpipe-nowhere/blobs",
        storage_endpoint_url=f"http://127.0.0.1:{free_port()}",
        storage_key_id="key",
        storage_secret="secret",
    )
    report = run_recovery_pass()
    assert report.submitted == [batch_id] and report.orphans_removed == []
