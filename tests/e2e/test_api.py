"""The HTTP API's contract: auth, tenant isolation, and a clear 4xx for every bad input."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import files_part, good_files, stored_state

pytestmark = pytest.mark.e2e

UPLOAD = "/api/documents/bulk-upload"


def test_health_reports_database_and_prefect(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": True,
        "storage": True,
        "prefect": True,
    }


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
