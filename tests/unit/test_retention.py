"""Retention: old finished batches go whole (rows, every file, flow runs); nothing newer, and
no open batch, is touched."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from docpipe import batches, orchestrator
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, BatchStatus, Document, DocumentStatus, utcnow
from docpipe.recovery import sweep_orphans
from docpipe.retention import RetentionReport, run_retention_pass
from docpipe.storage import OUTPUT_SUFFIXES, Storage, batch_folder, get_storage, output_key
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import make_tenant, settings_with
from tests.unit.prefect_stand_in import FlowRun, PrefectStandIn

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Made:
    batch_id: str
    tenant_id: str
    key: str
    flow_run_id: str


def made_batch(
    prefect: PrefectStandIn, status: BatchStatus, *, ended_days_ago: float, documents_: int = 2
) -> Made:
    """A batch of Ready documents with every output stored, ended (or, if still open, last
    touched) this long ago, and its flow run in Prefect."""
    tenant_id, key = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    pages = [
        (f"p{i}.png", io.BytesIO(documents.document(documents.phrase(i), "png")))
        for i in range(documents_)
    ]
    with stage_files(pages, get_settings()) as staged:
        batch_id = batches.create_batch(tenant, staged).batch_id
    ended = utcnow() - ended_days_ago * DAY
    storage = get_storage()
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        for document in batch.documents:
            for output in OUTPUT_SUFFIXES:
                storage.put_bytes(output.encode(), output_key(document.storage_key, output))
            document.status = DocumentStatus.READY
            document.outputs = ",".join(OUTPUT_SUFFIXES)
            document.text_key = output_key(document.storage_key, "text")
        flow_run_id = f"run-of-{batch_id}"
        batch.status, batch.submissions, batch.flow_run_id = status, 1, flow_run_id
        batch.created_at = batch.started_at = ended - timedelta(minutes=5)
        # Even a finish time on an open batch (none has one) never makes it expire.
        batch.completed_at = ended
    prefect.flow_runs[flow_run_id] = FlowRun(
        batch_id,
        tenant_id,
        tenant.tier,
        1,
        state="COMPLETED" if status.is_final else "RUNNING",
        name=orchestrator.run_name(batch_id, 1),
        ended=ended if status.is_final else None,
    )
    return Made(batch_id, tenant_id, key, flow_run_id)


def files_of(made: Made) -> dict[str, bytes]:
    storage = get_storage()
    return {
        k: storage.read_bytes(k) for k in storage.keys(batch_folder(made.tenant_id, made.batch_id))
    }


def rows_of(made: Made) -> tuple[BatchStatus | None, int]:
    with session_scope() as session:
        batch = session.get(Batch, made.batch_id)
        count = len(
            session.scalars(select(Document.id).where(Document.batch_id == made.batch_id)).all()
        )
        return (batch.status if batch else None), count


def test_old_finished_batches_go_whole_and_nothing_newer_or_open_is_touched(
    client: TestClient, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [
        made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=400),
        made_batch(prefect, BatchStatus.CANCELLED, ended_days_ago=40),
        made_batch(prefect, BatchStatus.FAILED, ended_days_ago=31),
    ]
    kept = [
        made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=29),
        made_batch(prefect, BatchStatus.PROCESSING, ended_days_ago=400),
        made_batch(prefect, BatchStatus.QUEUED, ended_days_ago=400),
    ]
    before = {m.batch_id: (rows_of(m), files_of(m)) for m in kept}
    assert all(len(files) == 2 * 5 for _, files in before.values())  # originals, 4 outputs
    settings_with(monkeypatch, retention_days=30, prefect_retention_days=0)

    report = run_retention_pass(page=2)  # two pages

    assert (report.batches, report.documents, report.files, report.flow_runs) == (3, 6, 30, 3)
    for made in old:
        assert rows_of(made) == (None, 0)
        assert files_of(made) == {}
        assert made.flow_run_id not in prefect.flow_runs
        response = client.get(f"/api/batches/{made.batch_id}", headers={"X-API-Key": made.key})
        assert response.status_code == 404
    for made in kept:
        assert (rows_of(made), files_of(made)) == before[made.batch_id]
        assert made.flow_run_id in prefect.flow_runs
        body = client.get(f"/api/batches/{made.batch_id}", headers={"X-API-Key": made.key}).json()
        text = client.get(
            f"/api/documents/{body['documents'][0]['id']}/text", headers={"X-API-Key": made.key}
        )
        assert (text.status_code, text.text) == (200, "text")
    # Nothing is left over for a second pass.
    assert run_retention_pass().batches == 0


def test_prefect_runs_older_than_their_retention_go_and_batches_stay(
    home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DOCPIPE_PREFECT_RETENTION_DAYS alone: old runs of the scheduled flows go; batches stay,
    and so does the ended run of a batch recovery has yet to look at."""
    finished = made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=40)
    stuck = made_batch(prefect, BatchStatus.PROCESSING, ended_days_ago=40)
    prefect.flow_runs[stuck.flow_run_id].state = "CRASHED"
    prefect.flow_runs[stuck.flow_run_id].ended = utcnow() - 40 * DAY
    for name, days in [("ingest-old", 8), ("recover-old", 30), ("ingest-new", 6)]:
        prefect.flow_runs[name] = FlowRun("", "", None, 0, "COMPLETED", name=name)
        prefect.flow_runs[name].ended = utcnow() - days * DAY
    settings_with(monkeypatch, prefect_retention_days=7)

    report = run_retention_pass()

    assert set(prefect.flow_runs) == {stuck.flow_run_id, "ingest-new"}
    assert (report.batches, report.flow_runs) == (0, 3)
    assert rows_of(finished) == (BatchStatus.COMPLETED, 2) and len(files_of(finished)) == 10


def test_while_prefect_does_not_answer_old_batches_stay_whole(
    home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their runs are found from their rows, so the rows wait for Prefect."""
    old = made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=40)
    settings_with(monkeypatch, retention_days=30)
    prefect.reachable = False

    report = run_retention_pass()

    assert not report.prefect_reachable and report.batches == 0
    assert rows_of(old) == (BatchStatus.COMPLETED, 2) and len(files_of(old)) == 10
    prefect.reachable = True
    assert run_retention_pass().batches == 1
    assert rows_of(old) == (None, 0) and files_of(old) == {}


def test_files_a_crash_leaves_behind_are_swept_as_orphans(
    client: TestClient, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows go first: a pass that dies before the files shows the tenant no batch with
    files missing, and recovery's orphan sweep removes the files."""
    old = made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=40)
    settings_with(monkeypatch, retention_days=30, orphan_grace_seconds=0)

    def storage_down(self: Storage, prefix: str) -> int:
        raise OSError("storage went away")

    with monkeypatch.context() as fault:
        fault.setattr(Storage, "delete_folder", storage_down)
        with pytest.raises(OSError):
            run_retention_pass()

    response = client.get(f"/api/batches/{old.batch_id}", headers={"X-API-Key": old.key})
    assert response.status_code == 404
    assert len(files_of(old)) == 10
    sweep_orphans()
    assert files_of(old) == {}


def test_retention_is_off_by_default(home: Path, prefect: PrefectStandIn) -> None:
    old = made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=3650)

    assert run_retention_pass() == RetentionReport()
    assert rows_of(old) == (BatchStatus.COMPLETED, 2) and len(files_of(old)) == 10
    assert old.flow_run_id in prefect.flow_runs


def test_a_batch_retried_while_a_pass_deletes_is_kept_whole(
    home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry that commits after the pass chose its batches, just before it deletes them,
    takes the batch back out of the pass: its rows and files stay."""
    from sqlalchemy import event, update

    from docpipe.db import engine_for

    made = made_batch(prefect, BatchStatus.COMPLETED, ended_days_ago=400)
    before = (rows_of(made), files_of(made))
    settings_with(monkeypatch, retention_days=30, prefect_retention_days=0)
    engine = engine_for(get_settings().database_url)
    retried: list[str] = []

    def retry_first(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE") and not retried:
            retried.append(made.batch_id)
            # Another process's retry, on its own connection, in the gap.
            with engine.connect() as other:
                other.execute(
                    update(Batch)
                    .where(Batch.id == made.batch_id)
                    .values(status=BatchStatus.QUEUED, completed_at=None)
                )
                other.commit()

    event.listen(engine, "before_cursor_execute", retry_first)
    try:
        report = run_retention_pass()
    finally:
        event.remove(engine, "before_cursor_execute", retry_first)

    assert retried and report.batches == 0
    assert rows_of(made) == (BatchStatus.QUEUED, before[0][1])
    assert files_of(made) == before[1]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_retention_days_outside_what_a_calendar_holds_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from pydantic import ValidationError

    from docpipe.config import Settings

    monkeypatch.setenv("DOCPIPE_RETENTION_DAYS", value)
    with pytest.raises(ValidationError, match="retention_days"):
        Settings()
