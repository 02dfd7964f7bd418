"""The HTTP API's contract: auth, tenant isolation, and a clear 4xx for every bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from docpipe.db import session_scope
from docpipe.models import Batch, Document
from docpipe.storage import get_storage
from tests import documents
from tests.conftest import TEST_MAX_FILE_BYTES, files_part, make_tenant

pytestmark = pytest.mark.e2e

UPLOAD = "/api/documents/bulk-upload"


def stored_state(tenant_id: str, home: Path) -> tuple[int, int, list[str], list[Path]]:
    """(batch rows, document rows, stored keys, staging leftovers) for a tenant."""
    with session_scope() as session:
        batches = session.scalar(select(func.count()).where(Batch.tenant_id == tenant_id))
        docs = session.scalar(select(func.count()).where(Document.tenant_id == tenant_id))
    staging = home / "staging"
    leftovers = list(staging.iterdir()) if staging.exists() else []
    return int(batches or 0), int(docs or 0), get_storage().keys(tenant_id), leftovers


def good_files(n: int) -> list[tuple[str, bytes]]:
    kinds = ["png", "pdf", "jpeg", "tiff"]
    return [
        (f"page-{i}.{kinds[i % 4]}", documents.document(documents.phrase(i), kinds[i % 4], seed=i))
        for i in range(n)
    ]


def test_health_reports_database_and_prefect(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": True, "prefect": True}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no-key"),
        pytest.param({"X-API-Key": "dp_wrong"}, 401, id="bad-key"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", UPLOAD + "?tenantId=x"),
        ("POST", "/api/documents/upload?tenantId=x"),
        ("GET", "/api/batches?tenantId=x"),
        ("GET", "/api/batches/00000000-0000-0000-0000-000000000000"),
        ("GET", "/api/documents/00000000-0000-0000-0000-000000000000"),
        ("GET", "/api/documents/00000000-0000-0000-0000-000000000000/text"),
    ],
)
def test_every_route_but_health_needs_a_valid_key(
    api: httpx.Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = api.request(method, path, headers=headers)
    assert response.status_code == status
    assert "API key" in response.json()["error"]


def test_naming_another_tenant_is_forbidden(api: httpx.Client, tenant: tuple[str, str]) -> None:
    _, key = tenant
    other, _ = make_tenant()
    response = api.post(
        f"{UPLOAD}?tenantId={other}", headers={"X-API-Key": key}, files=files_part(good_files(1))
    )
    assert response.status_code == 403
    assert api.get(f"/api/batches?tenantId={other}", headers={"X-API-Key": key}).status_code == 403


def test_forbidden_type_in_ten_files_rejects_all_and_stores_nothing(
    api: httpx.Client, tenant: tuple[str, str], docpipe_home: Path
) -> None:
    tenant_id, key = tenant
    files = good_files(9) + [("notes.pdf", b"MZ\x90\x00 this is an executable, named .pdf")]
    response = api.post(
        f"{UPLOAD}?tenantId={tenant_id}", headers={"X-API-Key": key}, files=files_part(files)
    )
    assert response.status_code == 400
    body = response.json()
    assert body["invalidFiles"] == [
        {
            "fileName": "notes.pdf",
            "reason": "not a PDF, PNG, JPEG or TIFF (judged by the file's content)",
        }
    ]
    assert "nothing was stored" in body["error"]
    assert stored_state(tenant_id, docpipe_home) == (0, 0, [], [])


def test_every_bad_file_is_named(
    api: httpx.Client, tenant: tuple[str, str], docpipe_home: Path
) -> None:
    tenant_id, key = tenant
    files = [("empty.png", b""), *good_files(2), ("a.gif", b"GIF89a....")]
    response = api.post(
        f"{UPLOAD}?tenantId={tenant_id}", headers={"X-API-Key": key}, files=files_part(files)
    )
    assert response.status_code == 400
    assert [f["fileName"] for f in response.json()["invalidFiles"]] == ["empty.png", "a.gif"]
    assert response.json()["invalidFiles"][0]["reason"] == "file is empty"
    assert stored_state(tenant_id, docpipe_home) == (0, 0, [], [])


def test_a_file_over_the_size_limit_gets_413(
    api: httpx.Client, tenant: tuple[str, str], docpipe_home: Path
) -> None:
    tenant_id, key = tenant
    big = b"%PDF-1.7\n" + b"0" * TEST_MAX_FILE_BYTES
    response = api.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part([*good_files(1), ("big.pdf", big)]),
    )
    assert response.status_code == 413
    [invalid] = response.json()["invalidFiles"]
    assert invalid["fileName"] == "big.pdf"
    assert f"the limit is {TEST_MAX_FILE_BYTES}" in invalid["reason"]
    assert stored_state(tenant_id, docpipe_home) == (0, 0, [], [])


def test_a_body_larger_than_any_upload_gets_413_before_it_is_sent(
    api: httpx.Client, tenant: tuple[str, str], docpipe_home: Path
) -> None:
    """A 10 GB upload is answered from its headers, not after the API has spooled it."""
    import socket
    from urllib.parse import urlsplit

    from docpipe.api.limits import body_limit
    from docpipe.config import get_settings

    tenant_id, key = tenant
    settings = get_settings()
    address = urlsplit(str(api.base_url))
    head = (
        f"POST {UPLOAD}?tenantId={tenant_id} HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\nX-API-Key: {key}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {10 * 1024**3}\r\n\r\n--b\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(head.encode())  # and nothing more of the 10 GB
        answer = b""
        while chunk := conn.recv(65536):  # the API closes the connection after answering
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 ")
    error = httpx.Response(413, content=rest.partition(b"\r\n\r\n")[2]).json()["error"]
    limit = body_limit(settings.max_batch_documents, settings.max_file_bytes)
    assert f"{limit} bytes at most" in error
    assert stored_state(tenant_id, docpipe_home) == (0, 0, [], [])


def test_more_files_than_a_batch_allows_is_rejected(
    api: httpx.Client, tenant: tuple[str, str], docpipe_home: Path
) -> None:
    tenant_id, key = tenant
    png = documents.document("X", "png", seed=1)
    response = api.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part([(f"{i}.png", png) for i in range(101)]),
    )
    assert response.status_code == 400
    assert "101 files in one batch; the limit is 100" in response.json()["error"]
    assert stored_state(tenant_id, docpipe_home) == (0, 0, [], [])


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        pytest.param(UPLOAD + "?tenantId={t}", {}, "files", id="no-files"),
        pytest.param(UPLOAD, {"files": [("files", ("a.png", b"x"))]}, "tenantId", id="no-tenant"),
        pytest.param(
            UPLOAD + "?tenantId={t}",
            {"content": b"not multipart", "headers": {"Content-Type": "text/plain"}},
            "",
            id="not-multipart",
        ),
        pytest.param("/api/batches?tenantId={t}&limit=0", {}, "limit", id="bad-limit"),
        pytest.param("/api/batches/x?waitSeconds=61", {}, "waitSeconds", id="wait-too-long"),
        pytest.param("/api/batches/x?waitSeconds=soon", {}, "waitSeconds", id="wait-not-a-number"),
    ],
)
def test_malformed_requests_get_400_with_a_reason(
    api: httpx.Client, tenant: tuple[str, str], path: str, kwargs: dict[str, Any], message: str
) -> None:
    tenant_id, key = tenant
    headers = {"X-API-Key": key, **kwargs.pop("headers", {})}
    method = "GET" if path.startswith("/api/batches") else "POST"
    response = api.request(method, path.format(t=tenant_id), headers=headers, **kwargs)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_single_upload_is_a_batch_of_one(api: httpx.Client, tenant: tuple[str, str]) -> None:
    tenant_id, key = tenant
    name, data = good_files(1)[0]
    response = api.post(
        f"/api/documents/upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files={"file": (name, data)},
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"documentId", "batchId", "status", "statusUrl"}
    batch = api.get(body["statusUrl"], headers={"X-API-Key": key}).json()
    assert [d["id"] for d in batch["documents"]] == [body["documentId"]]
    document = api.get(f"/api/documents/{body['documentId']}", headers={"X-API-Key": key}).json()
    assert document["fileName"] == name and document["batchId"] == body["batchId"]


def test_a_tenant_never_sees_another_tenants_batch_or_document(
    api: httpx.Client, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    response = api.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part(good_files(1)),
    )
    body = response.json()
    _, other_key = make_tenant()
    other = {"X-API-Key": other_key}
    assert api.get(f"/api/batches/{body['batchId']}", headers=other).status_code == 404
    doc = body["documentIds"][0]
    assert api.get(f"/api/documents/{doc}", headers=other).status_code == 404
    assert api.get(f"/api/documents/{doc}/text", headers=other).status_code == 404
    assert api.get("/api/batches/nope", headers={"X-API-Key": key}).status_code == 404


def test_a_client_can_wait_for_a_batch_in_one_request(
    api: httpx.Client, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    headers = {"X-API-Key": key}
    batch_id = api.post(
        f"{UPLOAD}?tenantId={tenant_id}", headers=headers, files=files_part(good_files(1))
    ).json()["batchId"]

    batch = api.get(f"/api/batches/{batch_id}?waitSeconds=60", headers=headers).json()

    assert batch["status"] == "Completed" and batch["successCount"] == 1
    # Asking again about a finished batch answers at once, with the same view.
    again = api.get(f"/api/batches/{batch_id}?waitSeconds=60", headers=headers, timeout=5)
    assert again.json() == batch
    gone = api.get("/api/batches/nope?waitSeconds=60", headers=headers, timeout=5)
    assert gone.status_code == 404


def test_a_wait_that_runs_out_answers_with_the_status_then(
    api: httpx.Client, tenant: tuple[str, str]
) -> None:
    """A batch that was accepted but never submitted stays Uploaded: the wait runs out."""
    import io

    from docpipe.batches import create_batch
    from docpipe.config import get_settings
    from docpipe.tenants import get_tenant
    from docpipe.uploads import stage_files

    tenant_id, key = tenant
    row = get_tenant(tenant_id)
    assert row is not None
    with stage_files([("a.png", io.BytesIO(good_files(1)[0][1]))], get_settings()) as staged:
        created = create_batch(row, staged)

    response = api.get(
        f"/api/batches/{created.batch_id}?waitSeconds=0.5", headers={"X-API-Key": key}
    )

    assert response.status_code == 200
    assert response.json()["status"] not in ("Completed", "Failed", "Cancelled")


def test_text_is_409_until_the_document_is_ready(
    api: httpx.Client, tenant: tuple[str, str], docpipe_home: Path
) -> None:
    """A batch that was accepted but not yet processed: its documents have no text yet."""
    from docpipe.batches import create_batch
    from docpipe.config import get_settings
    from docpipe.tenants import get_tenant
    from docpipe.uploads import stage_files

    tenant_id, key = tenant
    row = get_tenant(tenant_id)
    assert row is not None
    import io

    with stage_files([("a.png", io.BytesIO(good_files(1)[0][1]))], get_settings()) as staged:
        created = create_batch(row, staged)  # not submitted: stays Uploaded
    response = api.get(f"/api/documents/{created.document_ids[0]}/text", headers={"X-API-Key": key})
    assert response.status_code == 409
    assert response.json()["error"] == "document is Uploaded, not Ready"


def test_batches_are_listed_newest_first_and_paged(
    api: httpx.Client, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    ids = []
    for _ in range(3):
        response = api.post(
            f"{UPLOAD}?tenantId={tenant_id}",
            headers={"X-API-Key": key},
            files=files_part(good_files(1)),
        )
        ids.append(response.json()["batchId"])
    page = api.get(f"/api/batches?tenantId={tenant_id}&limit=2", headers={"X-API-Key": key}).json()
    assert page["total"] == 3
    assert [b["id"] for b in page["items"]] == [ids[2], ids[1]]
    rest = api.get(
        f"/api/batches?tenantId={tenant_id}&limit=2&offset=2", headers={"X-API-Key": key}
    ).json()
    assert [b["id"] for b in rest["items"]] == [ids[0]]
