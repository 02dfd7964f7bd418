"""The HTTP API's contract, in process: auth, tenant isolation, and a clear 4xx with
{"error": ...} for every bad input, with nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import documents
from tests.helpers import TEST_MAX_FILE_BYTES, files_part, good_files, make_tenant, stored_state

UPLOAD = "/api/documents/bulk-upload"


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
    client: TestClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = client.request(method, path, headers=headers)
    assert response.status_code == status
    assert "API key" in response.json()["error"]


def test_naming_another_tenant_is_forbidden(client: TestClient, tenant: tuple[str, str]) -> None:
    _, key = tenant
    other, _ = make_tenant()
    response = client.post(
        f"{UPLOAD}?tenantId={other}", headers={"X-API-Key": key}, files=files_part(good_files(1))
    )
    assert response.status_code == 403
    assert (
        client.get(f"/api/batches?tenantId={other}", headers={"X-API-Key": key}).status_code == 403
    )


def test_forbidden_type_in_ten_files_rejects_all_and_stores_nothing(
    client: TestClient, tenant: tuple[str, str], home: Path
) -> None:
    tenant_id, key = tenant
    files = good_files(9) + [("notes.pdf", b"MZ\x90\x00 this is an executable, named .pdf")]
    response = client.post(
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
    assert stored_state(tenant_id, home) == (0, 0, [], [])


def test_every_bad_file_is_named(client: TestClient, tenant: tuple[str, str], home: Path) -> None:
    tenant_id, key = tenant
    files = [("empty.png", b""), *good_files(2), ("a.gif", b"GIF89a....")]
    response = client.post(
        f"{UPLOAD}?tenantId={tenant_id}", headers={"X-API-Key": key}, files=files_part(files)
    )
    assert response.status_code == 400
    assert [f["fileName"] for f in response.json()["invalidFiles"]] == ["empty.png", "a.gif"]
    assert response.json()["invalidFiles"][0]["reason"] == "file is empty"
    assert stored_state(tenant_id, home) == (0, 0, [], [])


def test_a_file_over_the_size_limit_gets_413(
    client: TestClient, tenant: tuple[str, str], home: Path
) -> None:
    tenant_id, key = tenant
    big = b"%PDF-1.7\n" + b"0" * TEST_MAX_FILE_BYTES
    response = client.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part([*good_files(1), ("big.pdf", big)]),
    )
    assert response.status_code == 413
    [invalid] = response.json()["invalidFiles"]
    assert invalid["fileName"] == "big.pdf"
    assert f"the limit is {TEST_MAX_FILE_BYTES}" in invalid["reason"]
    assert stored_state(tenant_id, home) == (0, 0, [], [])


def test_more_files_than_a_batch_allows_is_rejected(
    client: TestClient, tenant: tuple[str, str], home: Path
) -> None:
    tenant_id, key = tenant
    png = documents.document("X", "png", seed=1)
    response = client.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part([(f"{i}.png", png) for i in range(101)]),
    )
    assert response.status_code == 400
    assert "101 files in one batch; the limit is 100" in response.json()["error"]
    assert stored_state(tenant_id, home) == (0, 0, [], [])


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        pytest.param(UPLOAD + "?tenantId={t}", {}, "a part named files", id="no-files"),
        pytest.param(
            UPLOAD + "?tenantId={t}",
            {"content": b"not multipart", "headers": {"Content-Type": "text/plain"}},
            "send them as multipart/form-data",
            id="not-multipart",
        ),
        pytest.param(
            UPLOAD + "?tenantId={t}",
            {"json": {"files": ["a.png"]}},
            "send them as multipart/form-data",
            id="json",
        ),
        pytest.param("/api/batches?tenantId={t}&limit=0", {}, "limit", id="bad-limit"),
        pytest.param("/api/batches/x?waitSeconds=61", {}, "waitSeconds", id="wait-too-long"),
        pytest.param("/api/batches/x?waitSeconds=soon", {}, "waitSeconds", id="wait-not-a-number"),
        pytest.param("/api/batches/x?waitSeconds=nan", {}, "finite number", id="wait-nan"),
    ],
)
def test_malformed_requests_get_400_with_a_reason(
    client: TestClient, tenant: tuple[str, str], path: str, kwargs: dict[str, Any], message: str
) -> None:
    tenant_id, key = tenant
    headers = {"X-API-Key": key, **kwargs.pop("headers", {})}
    method = "GET" if path.startswith("/api/batches") else "POST"
    response = client.request(method, path.format(t=tenant_id), headers=headers, **kwargs)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_without_tenant_id_an_upload_and_the_list_are_the_keys_tenants(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    response = client.post(UPLOAD, headers={"X-API-Key": key}, files=files_part(good_files(1)))
    assert response.status_code == 202, response.text
    batch = client.get(response.json()["statusUrl"], headers={"X-API-Key": key}).json()
    assert batch["tenantId"] == tenant_id
    listed = client.get("/api/batches", headers={"X-API-Key": key}).json()
    assert [b["id"] for b in listed["items"]] == [batch["id"]]


def test_the_limits_are_told_to_a_key_only(client: TestClient, tenant: tuple[str, str]) -> None:
    limits = client.get("/api/limits", headers={"X-API-Key": tenant[1]})
    assert limits.status_code == 200
    assert limits.json() == {
        "maxFileBytes": TEST_MAX_FILE_BYTES,
        "maxBatchDocuments": 100,
        "maxRequestBytes": 100 * (TEST_MAX_FILE_BYTES + 64 * 1024) + 1024 * 1024,
    }
    assert client.get("/api/limits").status_code == 401


def test_single_upload_is_a_batch_of_one(client: TestClient, tenant: tuple[str, str]) -> None:
    tenant_id, key = tenant
    name, data = good_files(1)[0]
    response = client.post(
        f"/api/documents/upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files={"file": (name, data)},
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"documentId", "batchId", "status", "statusUrl"}
    batch = client.get(body["statusUrl"], headers={"X-API-Key": key}).json()
    assert [d["id"] for d in batch["documents"]] == [body["documentId"]]
    document = client.get(f"/api/documents/{body['documentId']}", headers={"X-API-Key": key}).json()
    assert document["fileName"] == name and document["batchId"] == body["batchId"]


@pytest.mark.parametrize(
    ("path", "parts", "said"),
    [
        pytest.param("upload", ["file", "file"], "/api/documents/bulk-upload", id="two-file"),
        pytest.param("upload", ["file", "files"], "files sent as `files`", id="file-and-files"),
        pytest.param("bulk-upload", ["files", "file"], "files sent as `file`", id="files-and-file"),
        pytest.param("bulk-upload", ["files", "doc"], "files sent as `doc`", id="files-and-doc"),
    ],
)
def test_files_an_upload_would_not_take_are_refused_and_nothing_is_stored(
    client: TestClient, tenant: tuple[str, str], path: str, parts: list[str], said: str
) -> None:
    """Not one file kept and the others dropped without a word: the client would think
    them uploaded."""
    tenant_id, key = tenant
    response = client.post(
        f"/api/documents/{path}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=[(part, named) for part, named in zip(parts, good_files(len(parts)), strict=True)],
    )
    assert response.status_code == 400
    assert said in response.json()["error"]
    listed = client.get(f"/api/batches?tenantId={tenant_id}", headers={"X-API-Key": key})
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("query", "fields", "said"),
    [
        pytest.param("&language=eng&language=deu", {}, "more than once", id="language-query"),
        pytest.param("", {"language": ["eng", "deu"]}, "more than once", id="language-field"),
        pytest.param(
            "",
            {"callbackUrl": ["https://a.example/", "https://b.example/"]},
            "more than once",
            id="callback",
        ),
        # An empty query value is a value: to a proxy it says "the tenant's default", while
        # docpipe would take the form field's.
        pytest.param("&language=", {"language": "deu"}, "given twice", id="empty-and-field"),
    ],
)
def test_an_option_given_twice_is_refused_not_taken_last(
    client: TestClient,
    tenant: tuple[str, str],
    query: str,
    fields: dict[str, Any],
    said: str,
) -> None:
    """A proxy or a log that reads the first of two values would see another upload than
    docpipe, which took the last."""
    tenant_id, key = tenant
    response = client.post(
        f"{UPLOAD}?tenantId={tenant_id}{query}",
        headers={"X-API-Key": key},
        files=files_part(good_files(1)),
        data=fields,
    )
    assert response.status_code == 400
    assert said in response.json()["error"]
    listed = client.get(f"/api/batches?tenantId={tenant_id}", headers={"X-API-Key": key})
    assert listed.json()["total"] == 0


def test_a_tenant_never_sees_another_tenants_batch_or_document(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    response = client.post(
        f"{UPLOAD}?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part(good_files(1)),
    )
    body = response.json()
    _, other_key = make_tenant()
    other = {"X-API-Key": other_key}
    assert client.get(f"/api/batches/{body['batchId']}", headers=other).status_code == 404
    doc = body["documentIds"][0]
    assert client.get(f"/api/documents/{doc}", headers=other).status_code == 404
    assert client.get(f"/api/documents/{doc}/text", headers=other).status_code == 404
    assert client.get("/api/batches/nope", headers={"X-API-Key": key}).status_code == 404


def test_a_wait_that_runs_out_answers_with_the_status_then(
    client: TestClient, tenant: tuple[str, str]
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

    response = client.get(
        f"/api/batches/{created.batch_id}?waitSeconds=0.5", headers={"X-API-Key": key}
    )

    assert response.status_code == 200
    assert response.json()["status"] not in ("Completed", "Failed", "Cancelled")


def test_text_is_409_until_the_document_is_ready(
    client: TestClient, tenant: tuple[str, str], home: Path
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
    response = client.get(
        f"/api/documents/{created.document_ids[0]}/text", headers={"X-API-Key": key}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "document is Uploaded, not Ready"


def test_batches_are_listed_newest_first_and_paged(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    ids = []
    for _ in range(3):
        response = client.post(
            f"{UPLOAD}?tenantId={tenant_id}",
            headers={"X-API-Key": key},
            files=files_part(good_files(1)),
        )
        ids.append(response.json()["batchId"])
    page = client.get(
        f"/api/batches?tenantId={tenant_id}&limit=2", headers={"X-API-Key": key}
    ).json()
    assert page["total"] == 3
    assert [b["id"] for b in page["items"]] == [ids[2], ids[1]]
    rest = client.get(
        f"/api/batches?tenantId={tenant_id}&limit=2&offset=2", headers={"X-API-Key": key}
    ).json()
    assert [b["id"] for b in rest["items"]] == [ids[0]]


def test_a_download_name_cannot_pose_as_another_type() -> None:
    """A right-to-left override in an uploaded name would show "\u202egnp.exe" as
    "exe.png" in a browser's save dialog: the name given back holds no such character."""
    from docpipe.api.routes.documents import _disposition

    header = _disposition("attachment", "scan\u202egnp.exe\x07")["Content-Disposition"]
    broken = _disposition("attachment", "one\u2028two\u2029.png")["Content-Disposition"]

    assert header.endswith("filename*=UTF-8''scangnp.exe")
    assert broken.endswith("filename*=UTF-8''onetwo.png")
    assert 'filename="scan_gnp.exe_"' in header


def test_a_trailing_slash_is_not_redirected_to_the_requests_host(client: TestClient) -> None:
    """Starlette's slash redirect is built from the Host header, which the caller writes."""
    answer = client.get("/health/", headers={"Host": "evil.example"}, follow_redirects=False)

    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert "error" in answer.json()


@pytest.mark.parametrize(
    ("name", "plain", "shown"),
    [
        ("scan é.png", "scan _.png", "scan%20%C3%A9.png"),
        (".png", "png", "png"),
        ("...", "document", "document"),
        ("a.pdf. ", "a.pdf", "a.pdf"),
        ("\u202egnp.exe", "_gnp.exe", "gnp.exe"),
    ],
)
def test_a_download_names_one_file_both_ways(name: str, plain: str, shown: str) -> None:
    """The ASCII name and the UTF-8 one a browser prefers name the same file: never a hidden
    dot-file, never one that displays as another type."""
    from docpipe.api.routes.documents import _disposition

    assert _disposition("attachment", name) == {
        "Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''{shown}"
    }
