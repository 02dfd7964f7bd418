"""Per-tenant limits: over one, an upload gets 429 with Retry-After and the reason, before
its body is read, and nothing is stored; other tenants are not held back."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from docpipe import batches
from docpipe.db import session_scope
from docpipe.models import Batch, BatchStatus
from tests import documents
from tests.helpers import files_part, make_tenant, settings_with


def client_with(monkeypatch: pytest.MonkeyPatch, **limits: int) -> Iterator[TestClient]:
    """The app in process with these settings (Prefect is the room's stand-in)."""
    from docpipe.api.app import create_app

    settings_with(monkeypatch, **limits)
    yield TestClient(create_app())  # no lifespan: no recovery pass submitting them


def upload(client: TestClient, tenant_id: str, key: str, pages: int = 1) -> httpx.Response:
    files = [(f"{i}.png", documents.document(documents.phrase(i), "png")) for i in range(pages)]
    return client.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        files=files_part(files),
        headers={"X-API-Key": key},
    )


def batch_count(tenant_id: str) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(Batch.tenant_id == tenant_id)) or 0)


@pytest.mark.parametrize(
    ("limit", "value", "allowed", "reason"),
    [
        pytest.param("tenant_uploads_per_minute", 2, 2, "uploads a minute", id="per-minute"),
        pytest.param("tenant_open_batches", 3, 3, "batches still open", id="open-batches"),
        pytest.param("tenant_pages_in_flight", 4, 2, "pages still being", id="pages"),
    ],
)
def test_over_a_limit_an_upload_gets_429_and_nothing_is_stored(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    limit: str,
    value: int,
    allowed: int,
    reason: str,
) -> None:
    tenant_id, key = make_tenant()
    other_id, other_key = make_tenant()
    for client in client_with(monkeypatch, **{limit: value}):
        for _ in range(allowed):
            assert upload(client, tenant_id, key, pages=2).status_code == 202
        refused = upload(client, tenant_id, key, pages=2)
        assert refused.status_code == 429
        assert reason in refused.json()["error"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert batch_count(tenant_id) == allowed
        # Another tenant is not held back by this one's use.
        assert upload(client, other_id, other_key).status_code == 202


def test_finished_work_no_longer_counts(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id, key = make_tenant()
    for client in client_with(monkeypatch, tenant_open_batches=1):
        first = upload(client, tenant_id, key).json()
        assert upload(client, tenant_id, key).status_code == 429
        batches.mark_cancelled(tenant_id, first["batchId"])
        assert batches.find_batch(tenant_id, first["batchId"]).status == BatchStatus.CANCELLED
        assert upload(client, tenant_id, key).status_code == 202


def test_a_retry_reopens_work_only_within_the_limits(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel and retry would otherwise reopen any number of batches past the limit."""
    tenant_id, key = make_tenant()
    for client in client_with(monkeypatch, tenant_open_batches=1):
        first = upload(client, tenant_id, key).json()["batchId"]
        batches.mark_cancelled(tenant_id, first)
        second = upload(client, tenant_id, key).json()["batchId"]  # the one open batch

        refused = client.post(f"/api/batches/{first}/retry", headers={"X-API-Key": key})

        assert refused.status_code == 429, refused.text
        assert "batches still open" in refused.json()["error"]
        assert batches.find_batch(tenant_id, first).status == BatchStatus.CANCELLED
        batches.mark_cancelled(tenant_id, second)
        retried = client.post(f"/api/batches/{first}/retry", headers={"X-API-Key": key})
        assert retried.status_code == 202, retried.text


def test_retries_sent_at_once_reopen_no_more_than_the_limit(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an attacker's review: four retries sent together each saw room for one
    more. Each now checks the limit in the tenant's turn, where the batch reopens."""
    from concurrent.futures import ThreadPoolExecutor

    from docpipe.dispatch import retry
    from docpipe.errors import OverLimit

    settings_with(monkeypatch, tenant_open_batches=1)
    tenant_id, key = make_tenant()
    ended = []
    for client in client_with(monkeypatch, tenant_open_batches=1):
        for _ in range(4):
            batch_id = upload(client, tenant_id, key).json()["batchId"]
            batches.mark_cancelled(tenant_id, batch_id)
            ended.append(batch_id)

    def try_retry(batch_id: str) -> str:
        try:
            retry(tenant_id, batch_id)
        except OverLimit:
            return "refused"
        return "reopened"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(try_retry, ended))

    assert sorted(outcomes) == ["refused", "refused", "refused", "reopened"]
    with session_scope() as session:
        reopened = session.scalar(
            select(func.count()).where(
                Batch.tenant_id == tenant_id,
                Batch.status.in_([BatchStatus.QUEUED, BatchStatus.PROCESSING]),
            )
        )
    assert reopened == 1


def test_uploads_sent_at_once_open_no_more_than_the_limit(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: the limit was checked only before each body was read, so uploads
    sent together each saw room for one more. The batch's commit now checks it again, in
    the tenant's turn; a refused upload leaves nothing stored."""
    from concurrent.futures import ThreadPoolExecutor

    from docpipe.config import get_settings
    from docpipe.dispatch import accept_batch
    from docpipe.errors import OverLimit
    from docpipe.storage import get_storage
    from docpipe.tenants import get_tenant

    settings_with(monkeypatch, tenant_open_batches=1)
    tenant_id, _ = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    page = documents.document(documents.phrase(1), "png")

    batches.check_tenant_limits(tenant_id)  # the API's check before the bodies: room for all

    def send(_: int) -> str:
        try:
            accept_batch(tenant, [("page.png", io.BytesIO(page))], get_settings())
        except OverLimit:
            return "refused"
        return "accepted"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(send, range(4)))

    assert sorted(outcomes) == ["accepted", "refused", "refused", "refused"]
    assert batch_count(tenant_id) == 1
    storage = get_storage()
    assert len(storage.fs.find(storage.root)) == 1  # the accepted batch's one original


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite: one writer
def test_a_cancel_is_not_held_up_by_the_tenants_turn(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: an upload or retry held the tenant FOR UPDATE, which blocked the
    foreign-key check of a cancel writing its batch row twice; a retry waiting for that
    batch meanwhile deadlocked with it. The tenant's turn no longer blocks such checks."""
    import threading

    tenant_id, key = make_tenant()
    for client in client_with(monkeypatch):
        batch_id = upload(client, tenant_id, key).json()["batchId"]
    cancelled = threading.Event()

    def cancel() -> None:
        batches.mark_cancelled(tenant_id, batch_id)
        cancelled.set()

    with session_scope() as session:
        batches._lock_tenant(session, tenant_id)  # an upload or a retry in its turn
        canceller = threading.Thread(target=cancel, daemon=True)
        canceller.start()
        # Blocked, it would wait for this transaction, which waits for it here.
        assert cancelled.wait(30), "the cancel waited for the tenant's turn"
    canceller.join()
    assert batches.find_batch(tenant_id, batch_id).status == BatchStatus.CANCELLED
