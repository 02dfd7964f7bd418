"""A tenant with a long history: the batch list says the same as each batch's status, and
what a request or a batch asks of the database does not grow with the finished work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, update

from docpipe import batches
from docpipe.config import get_settings
from docpipe.db import engine_for, session_scope
from docpipe.dispatch import dispatch
from docpipe.models import Batch, BatchStatus, Document, DocumentStatus, Tier, new_id, utcnow
from docpipe.recovery import run_recovery_pass
from tests.helpers import files_part, good_files
from tests.unit.prefect_stand_in import PrefectStandIn

UPLOAD = "/api/documents/bulk-upload"
COUNTS = ("totalDocuments", "completedDocuments", "successCount", "failureCount")


def upload(client: TestClient, tenant: tuple[str, str], documents: int) -> str:
    tenant_id, key = tenant
    response = client.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part(good_files(documents)),
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batchId"])


def set_statuses(batch_id: str, *statuses: DocumentStatus) -> None:
    """Its documents, in order, reach these statuses (as the flow's steps would write)."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        for document, status in zip(batch.documents, statuses, strict=True):
            document.status = status


def old_history(tenant_id: str, *, batches: int, documents: int) -> None:
    """Finished batches of Ready documents, from days ago, written straight to the database."""
    long_ago = utcnow() - timedelta(days=30)
    with session_scope() as session:
        for n in range(batches):
            batch = Batch(
                id=new_id(), tenant_id=tenant_id, tier=Tier.STANDARD, source="api",
                status=BatchStatus.COMPLETED, created_at=long_ago + timedelta(minutes=n),
                started_at=long_ago + timedelta(minutes=n), completed_at=long_ago,
                document_count=documents, success_count=documents,
            )  # fmt: skip
            session.add(batch)
            session.add_all(
                Document(
                    id=new_id(),
                    batch_id=batch.id,
                    tenant_id=tenant_id,
                    position=i,
                    file_name=f"old-{n}-{i}.png",
                    kind="png",
                    size_bytes=1,
                    sha256=f"{n:064d}",
                    storage_key=f"{tenant_id}/{batch.id}/{i}.png",
                    status=DocumentStatus.READY,
                    created_at=long_ago,
                    page_count=1,
                )  # fmt: skip
                for i in range(documents)
            )


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements the app's database runs inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])  # (connection, cursor, statement, parameters, context, many)

    engine = engine_for(get_settings().database_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextmanager
def database_steps() -> Iterator[list[int]]:
    """How many steps SQLite's virtual machine takes for the statements inside the block:
    the database's work, the same every time for the same plan over the same rows."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0  # carry on

    def counting(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_progress_handler(step, 1)

    def not_counting(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_progress_handler(None, 1)

    engine = engine_for(get_settings().database_url)
    event.listen(engine, "checkout", counting)
    event.listen(engine, "checkin", not_counting)
    try:
        yield steps
    finally:
        event.remove(engine, "checkout", counting)
        event.remove(engine, "checkin", not_counting)


def test_the_list_counts_each_batch_as_its_status_does(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    headers = {"X-API-Key": key}
    completed = upload(client, tenant, 3)
    set_statuses(completed, DocumentStatus.READY, DocumentStatus.OCR_FAILED, DocumentStatus.READY)
    batches.close_batch(completed)
    cancelled = upload(client, tenant, 3)
    set_statuses(
        cancelled, DocumentStatus.READY, DocumentStatus.PROCESSING, DocumentStatus.UPLOADED
    )
    assert client.post(f"/api/batches/{cancelled}/cancel", headers=headers).status_code == 200
    failed = upload(client, tenant, 2)
    set_statuses(failed, DocumentStatus.VALIDATION_FAILED, DocumentStatus.PROCESSING)
    batches.mark_failed(failed, "the flow broke")
    running = upload(client, tenant, 3)
    set_statuses(running, DocumentStatus.READY, DocumentStatus.PROCESSING, DocumentStatus.UPLOADED)

    page = client.get(f"/api/batches?tenantId={tenant_id}", headers=headers).json()
    listed = {item["id"]: item for item in page["items"]}
    assert list(listed) == [running, failed, cancelled, completed]
    for batch_id, item in listed.items():
        status = client.get(f"/api/batches/{batch_id}", headers=headers).json()
        assert {k: item[k] for k in (*COUNTS, "cancelledCount", "status")} == {
            k: status[k] for k in (*COUNTS, "cancelledCount", "status")
        }, batch_id
    # The failed batch's document caught Processing ended with it (OcrFailed).
    assert [listed[b]["completedDocuments"] for b in (completed, cancelled, failed, running)] == [
        3, 3, 2, 1
    ]  # fmt: skip

    # An open batch's counts are its documents' as they are now.
    set_statuses(running, DocumentStatus.READY, DocumentStatus.READY, DocumentStatus.OCR_FAILED)
    page = client.get(f"/api/batches?tenantId={tenant_id}", headers=headers).json()
    assert {k: page["items"][0][k] for k in COUNTS} == {
        "totalDocuments": 3, "completedDocuments": 3, "successCount": 2, "failureCount": 1
    }  # fmt: skip


def test_a_page_of_finished_batches_does_not_read_their_documents(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    old_history(tenant_id, batches=25, documents=4)
    with statements() as seen:
        response = client.get(f"/api/batches?tenantId={tenant_id}", headers={"X-API-Key": key})
    page = response.json()
    assert page["total"] == 25 and len(page["items"]) == 20
    assert all(
        (item["totalDocuments"], item["successCount"], item["completedDocuments"]) == (4, 4, 4)
        for item in page["items"]
    )
    assert seen and not [s for s in seen if "documents" in s]


def test_an_upload_dispatch_and_recovery_do_the_same_work_however_long_the_history(
    client: TestClient, tenant: tuple[str, str], prefect: PrefectStandIn
) -> None:
    """A batch waits for Prefect: every look at it goes over the open work, not the history."""
    tenant_id, _ = tenant
    prefect.reachable = False
    waiting = upload(client, tenant, 2)
    set_statuses(waiting, DocumentStatus.PROCESSING, DocumentStatus.UPLOADED)
    with session_scope() as session:  # the tenant's one earlier start, to take turns by
        session.execute(update(Batch).values(started_at=utcnow()))

    def work() -> dict[str, int]:
        done = {}
        for name, look in {
            "upload's limits": lambda: batches.check_tenant_limits(tenant_id),
            "dispatch": lambda: dispatch() == [],
            "recovery": lambda: not run_recovery_pass(sweep=False).prefect_reachable,
        }.items():
            with database_steps() as steps:
                assert look() in (None, True)
            done[name] = steps[0]
        return done

    fresh = work()
    old_history(tenant_id, batches=200, documents=10)
    assert work() == fresh
