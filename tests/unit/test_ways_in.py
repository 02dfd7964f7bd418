"""Runs started outside the API (the Prefect UI, Python) and cancels from Prefect, decided
against a stand-in for Prefect: the same batch behaviour whichever way in was used."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from docpipe import batches, dispatch
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, BatchStatus, Document, DocumentStatus
from docpipe.recovery import run_recovery_pass
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import make_tenant
from tests.unit.prefect_stand_in import PrefectStandIn


def waiting_batch(tier: str = "standard", pages: int = 1) -> tuple[str, str, str]:
    """A batch stored but never handed to Prefect: (tenant id, key, batch id)."""
    tenant_id, key = make_tenant(tier)
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    files = [
        (f"page-{i}.png", io.BytesIO(documents.document(documents.phrase(i), "png")))
        for i in range(pages)
    ]
    with stage_files(files, get_settings()) as staged:
        return tenant_id, key, batches.create_batch(tenant, staged).batch_id


def stored(batch_id: str) -> Batch:
    batch = batches.get_any_batch(batch_id)
    assert batch is not None
    return batch


@pytest.mark.parametrize(
    ("tier", "queue"),
    [
        pytest.param("vip", "incoming", id="vip-from-the-ui"),
        pytest.param("standard", "incoming", id="standard-from-the-ui"),
        pytest.param("vip", "batch", id="vip-sent-to-the-standard-queue"),
    ],
)
def test_a_run_started_outside_hands_its_batch_to_its_tiers_queue_once(
    home: Path, prefect: PrefectStandIn, tier: str, queue: str
) -> None:
    tenant_id, _, batch_id = waiting_batch(tier)
    outside = prefect.started_outside(batch_id, queue=queue)

    taken = dispatch.adopt_flow_run(outside)
    again = dispatch.adopt_flow_run(outside)  # the same event heard twice

    right = "critical" if tier == "vip" else "batch"
    assert prefect.flow_runs[outside].state == "CANCELLED"
    assert prefect.flow_runs[outside].message == (
        f"moved to queue {right!r}, the {tier} tier's, as batch-{batch_id}, in its turn"
    )
    assert (taken, again) == (batch_id, None)
    assert len(prefect.runs_of(batch_id)) == 2  # the original and docpipe's one
    successor = stored(batch_id).flow_run_id
    assert successor is not None
    run = prefect.flow_runs[successor]
    assert (run.queue, run.name) == (right, f"batch-{batch_id}")
    assert run.tags == [f"tenant:{tenant_id}", f"tier:{tier}"]


def test_a_burst_of_runs_from_the_ui_starts_one_run_of_the_batch(
    home: Path, prefect: PrefectStandIn
) -> None:
    _, _, batch_id = waiting_batch()
    outside = [prefect.started_outside(batch_id) for _ in range(5)]

    taken = [dispatch.adopt_flow_run(run_id) for run_id in outside]

    assert taken == [batch_id, None, None, None, None]
    successor = stored(batch_id).flow_run_id
    assert len(prefect.runs_of(batch_id)) == 6 and prefect.flow_runs[successor or ""].number == 1
    for run_id in outside[1:]:
        assert prefect.flow_runs[run_id].message == (
            f"Not run: batch {batch_id} already has flow run {successor} on its way"
        )


def test_a_run_from_the_ui_waits_its_turn_behind_the_room_kept_for_vip(
    home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import settings_with

    settings_with(monkeypatch, dispatch_slots=2, vip_reserved_slots=1)
    _, _, holding = waiting_batch()
    assert dispatch.dispatch() == [holding]  # standard work has its one slot
    _, _, batch_id = waiting_batch()
    outside = prefect.started_outside(batch_id)

    assert dispatch.adopt_flow_run(outside) == batch_id

    assert prefect.flow_runs[outside].state == "CANCELLED"
    assert stored(batch_id).flow_run_id is None  # waiting in line, not ahead of it
    _, _, vip = waiting_batch("vip")
    assert dispatch.dispatch() == [vip]  # the VIP room is still free


def test_a_recovery_pass_takes_runs_whose_arrival_no_worker_heard(
    home: Path, prefect: PrefectStandIn
) -> None:
    _, _, batch_id = waiting_batch("vip")
    outside = prefect.started_outside(batch_id)

    report = run_recovery_pass()

    assert report.adopted == [outside] and prefect.flow_runs[outside].state == "CANCELLED"
    successor = stored(batch_id).flow_run_id
    assert successor is not None and prefect.flow_runs[successor].queue == "critical"
    assert run_recovery_pass().adopted == []


def test_a_rerun_from_the_ui_redoes_what_failed_as_the_batchs_next_run(
    home: Path, prefect: PrefectStandIn
) -> None:
    tenant_id, _, batch_id = waiting_batch(pages=2)
    assert dispatch.dispatch() == [batch_id]  # its first run, made by docpipe
    with session_scope() as session:  # ... which has finished, one document failing OCR
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.status = BatchStatus.COMPLETED
        batch.documents[0].status = DocumentStatus.READY
        batch.documents[1].status = DocumentStatus.OCR_FAILED
    outside = prefect.started_outside(batch_id)

    assert dispatch.adopt_flow_run(outside) == batch_id

    batch = stored(batch_id)
    run = prefect.flow_runs[batch.flow_run_id or ""]
    assert (run.name, run.tags) == (f"batch-{batch_id}-2", [f"tenant:{tenant_id}", "tier:standard"])
    assert [d.status for d in batches.find_batch(tenant_id, batch_id).documents] == [
        DocumentStatus.READY,
        DocumentStatus.UPLOADED,
    ]


def test_runs_docpipe_made_are_left_as_they_are(home: Path, prefect: PrefectStandIn) -> None:
    _, _, batch_id = waiting_batch("vip")
    dispatch.dispatch()
    run_id = stored(batch_id).flow_run_id
    assert run_id is not None
    before = (prefect.flow_runs[run_id].state, prefect.flow_runs[run_id].name)

    assert dispatch.adopt_flow_run(run_id) is None
    assert (prefect.flow_runs[run_id].state, prefect.flow_runs[run_id].name) == before


@pytest.mark.parametrize("case", ["unknown", "cancelled", "all-ready"])
def test_a_run_for_a_batch_that_may_not_run_ends_at_once_with_the_reason(
    home: Path, prefect: PrefectStandIn, case: str
) -> None:
    """It would refuse itself when it started; waiting where no worker takes runs, it ends."""
    tenant_id, _, batch_id = waiting_batch()
    if case == "cancelled":
        batches.mark_cancelled(tenant_id, batch_id)
    elif case == "all-ready":
        with session_scope() as session:
            batch = session.get(Batch, batch_id)
            assert batch is not None
            batch.status = BatchStatus.COMPLETED
            batch.documents[0].status = DocumentStatus.READY
    shown = "no-such-batch" if case == "unknown" else batch_id
    outside = prefect.started_outside(shown)

    assert dispatch.adopt_flow_run(outside) is None

    run = prefect.flow_runs[outside]
    assert run.state == "CANCELLED"
    assert (
        run.message
        == "Not run: "
        + {
            "unknown": "no batch 'no-such-batch'",
            "cancelled": f"batch {batch_id} was cancelled",
            "all-ready": f"batch {batch_id} is Completed and every document is Ready",
        }[case]
    )
    assert len(prefect.flow_runs) == 1  # nothing submitted in its place


def test_a_second_run_for_a_batch_being_processed_is_refused(
    home: Path, prefect: PrefectStandIn
) -> None:
    _, _, batch_id = waiting_batch()
    dispatch.dispatch()
    first = stored(batch_id).flow_run_id
    assert batches.begin_processing(batch_id, first).refusal is None
    outside = prefect.started_outside(batch_id, queue="batch")  # where a worker takes it

    assert dispatch.adopt_flow_run(outside) is None
    assert prefect.flow_runs[outside].message.endswith(f"being processed by flow run {first}")
    plan = batches.begin_processing(batch_id, outside)  # had it started all the same

    assert plan.refusal == f"batch {batch_id} is being processed by flow run {first}"
    assert stored(batch_id).flow_run_id == first


def test_a_run_docpipe_never_saw_counts_as_the_next_submission_when_it_starts(
    home: Path, prefect: PrefectStandIn
) -> None:
    _, _, batch_id = waiting_batch()
    plan = batches.begin_processing(batch_id, "a-run-started-from-the-ui")
    assert plan.refusal is None and plan.run_number == 1
    assert stored(batch_id).flow_run_id == "a-run-started-from-the-ui"


def test_a_cancel_in_prefect_ends_the_batch_as_an_api_cancel_does(
    home: Path, prefect: PrefectStandIn, client: TestClient
) -> None:
    tenant_id, key, batch_id = waiting_batch(pages=3)
    dispatch.dispatch()
    run_id = stored(batch_id).flow_run_id
    assert run_id is not None
    batches.begin_processing(batch_id, run_id)
    with session_scope() as session:  # one document was read before the cancel
        first = session.query(Document).filter_by(batch_id=batch_id, position=0).one()
        first.status = DocumentStatus.READY
    prefect.flow_runs[run_id].state = "CANCELLING"  # the UI's cancel

    report = run_recovery_pass()

    assert report.cancelled == [batch_id] and report.resubmitted == []
    view = client.get(f"/api/batches/{batch_id}", headers={"X-API-Key": key}).json()
    assert view["status"] == "Cancelled"
    assert [d["status"] for d in view["documents"]] == ["Ready", "Cancelled", "Cancelled"]
    counts = ("completedDocuments", "successCount", "failureCount", "cancelledCount")
    assert [view[c] for c in counts] == [3, 1, 0, 2]
    assert run_recovery_pass().resubmitted == []  # and it stays cancelled
    assert dispatch.cancelled_in_prefect(run_id) is None  # the worker's event: nothing more


def test_retry_redoes_ocr_failures_and_validation_failures_only_on_request(
    home: Path, prefect: PrefectStandIn, client: TestClient
) -> None:
    tenant_id, key, batch_id = waiting_batch(pages=2)
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.status = BatchStatus.COMPLETED
        batch.documents[0].status = DocumentStatus.READY
        batch.documents[1].status = DocumentStatus.VALIDATION_FAILED
    headers = {"X-API-Key": key}

    refused = client.post(f"/api/batches/{batch_id}/retry", headers=headers)
    assert refused.status_code == 409
    assert "includeInvalid=true" in refused.json()["error"]

    again = client.post(f"/api/batches/{batch_id}/retry?includeInvalid=true", headers=headers)
    assert again.status_code == 202
    assert [d["status"] for d in again.json()["documents"]] == ["Ready", "Uploaded"]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        pytest.param("invoice.pdf", "invoice.pdf", id="short"),
        pytest.param("a\nb{c}.png", "a_b_c_.png", id="unsafe"),
        pytest.param("x" * 100 + ".tiff", "x" * 40 + "…" + "x" * 14 + ".tiff", id="long"),
    ],
)
def test_task_runs_are_labelled_by_a_short_safe_file_name(name: str, label: str) -> None:
    assert batches.task_label(name) == label
    assert len(batches.task_label(name)) <= 60


def folder_batch_with_text(name: str) -> tuple[str, str]:
    """A finished folder batch of one Ready document named `name`: (tenant id, batch id)."""
    from docpipe.storage import get_storage, text_key

    tenant_id, _, batch_id = waiting_batch()
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.status, batch.source = BatchStatus.COMPLETED, "inbox"
        document = batch.documents[0]
        document.file_name, document.status = name, DocumentStatus.READY
        document.text_key = text_key(document.storage_key)
        get_storage().put_bytes(b"THE WORDS", document.text_key)
    return tenant_id, batch_id


def test_results_are_written_whole_for_any_name_that_fits(home: Path) -> None:
    from docpipe import inbox

    name = "あ" * 80 + ".png"  # 244 bytes: its .txt fits, a longer temporary name would not
    tenant_id, batch_id = folder_batch_with_text(name)

    written = inbox.write_results(batch_id)

    outbox = get_settings().outbox / tenant_id
    assert written == [f"{name}.txt", f"batch-{batch_id}.json"]
    assert (outbox / f"{name}.txt").read_bytes() == b"THE WORDS"
    assert sorted(p.name for p in outbox.iterdir()) == sorted(written)  # no leftovers


def test_an_outbox_folder_that_is_a_link_gets_nothing_and_breaks_nothing(
    home: Path, tmp_path: Path
) -> None:
    from docpipe import inbox

    tenant_id, batch_id = folder_batch_with_text("a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    get_settings().outbox.mkdir(parents=True)
    (get_settings().outbox / tenant_id).symlink_to(elsewhere)

    assert inbox.write_results(batch_id) == []
    assert list(elsewhere.iterdir()) == []
