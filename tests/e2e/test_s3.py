"""Documents on S3: the whole stack against SeaweedFS on loopback, and its faults."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from docpipe import inbox, inbox_store
from docpipe.config import get_settings
from docpipe.db import upgrade_database
from docpipe.home import prepare_home
from docpipe.runtime.stack import Stack, free_port
from docpipe.tenants import get_tenant
from tests import documents
from tests.helpers import (
    files_part,
    make_tenant,
    post_batch,
    postgres_schema,
    settings_with,
    unique,
    wait_for_batch,
)
from tests.s3 import S3Server, seaweedfs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3_stack(
    s3_server: S3Server, docpipe_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A whole stack of its own (server, worker, API) whose documents are on SeaweedFS;
    this process's settings point at it meanwhile."""
    home = tmp_path_factory.mktemp("s3-home")
    prefix = unique("stack")
    env = {
        "DOCPIPE_HOME": str(home),
        "DOCPIPE_API_PORT": str(free_port()),
        "DOCPIPE_PREFECT_PORT": str(free_port()),
        **s3_server.env(
            storage=f"{prefix}/blobs", inbox=f"{prefix}/inbox", outbox=f"{prefix}/outbox"
        ),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    stack = Stack(get_settings())
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


@pytest.fixture(autouse=True)
def settings_restored() -> Iterator[None]:
    """Settings read again after a test changed them (monkeypatch restores only the env)."""
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def s3_api(s3_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=s3_stack.settings.api_url, timeout=60) as client:
        yield client


def test_a_batch_on_s3_is_read_and_its_outputs_come_back(
    s3_api: httpx.Client, s3_stack: Stack, s3_server: S3Server
) -> None:
    tenant_id, key = make_tenant()
    phrases = [documents.phrase(i) for i in range(2)]
    files = [
        ("one.png", documents.document(phrases[0], "png", seed=0)),
        ("two.pdf", documents.document(phrases[1], "pdf", seed=1)),
    ]
    batch_id = post_batch(s3_api, tenant_id, key, files)

    batch = wait_for_batch(s3_api, key, batch_id, timeout=240)

    assert batch["status"] == "Completed"
    assert [d["status"] for d in batch["documents"]] == ["Ready", "Ready"]
    headers = {"X-API-Key": key}
    for document, phrase in zip(batch["documents"], phrases, strict=True):
        text = s3_api.get(f"/api/documents/{document['id']}/text", headers=headers)
        assert text.status_code == 200
        assert documents.words(phrase) <= documents.words(text.text), text.text
        pdf = s3_api.get(f"/api/documents/{document['id']}/pdf", headers=headers)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # Stored in the bucket, under the configured prefix; nothing on local disk.
    stored = s3_server.fs().find(s3_stack.settings.storage_url.removeprefix("s3://"))
    assert any(path.endswith(".png.txt") for path in stored)
    assert any(f"/{tenant_id}/{batch_id}/" in path for path in stored)
    assert not (s3_stack.settings.home / "blobs").exists()


def test_health_says_storage_answers(s3_api: httpx.Client) -> None:
    assert s3_api.get("/health").json() == {
        "status": "ok",
        "database": True,
        "storage": True,
        "prefect": True,
    }


def health_and_upload(tenant_id: str, key: str, text: str) -> tuple[httpx.Response, httpx.Response]:
    """/health, then a one-page upload, through an API in this process (its settings)."""
    from docpipe.api.app import create_app

    with TestClient(create_app()) as client:
        health = client.get("/health")
        upload = client.post(
            f"/api/documents/bulk-upload?tenantId={tenant_id}",
            files=files_part([("one.png", documents.document(text, "png"))]),
            headers={"X-API-Key": key},
        )
    return health, upload


def test_credentials_the_store_refuses_are_a_503_and_not_ok_health(
    s3_stack: Stack, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = make_tenant()
    wrong = "wrong-" + unique("secret")
    settings_with(monkeypatch, storage_secret=wrong)
    health, upload = health_and_upload(tenant_id, key, "refused")
    assert health.status_code == 200
    assert health.json()["storage"] is False and health.json()["status"] == "degraded"
    assert upload.status_code == 503, upload.text
    assert set(upload.json()) == {"error"}
    for text in (health.text, upload.text):
        assert wrong not in text and s3_server.secret not in text
    assert _batches_of(tenant_id) == 0


def test_storage_options_alone_reach_the_store(
    s3_stack: Stack, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DOCPIPE_STORAGE_OPTIONS, fsspec's own options as JSON, in place of the named
    settings: an upload is stored in the bucket, and /health finds the store."""
    for name in ("ENDPOINT_URL", "REGION", "KEY_ID", "SECRET"):
        monkeypatch.delenv(f"DOCPIPE_STORAGE_{name}", raising=False)
    options = {
        "endpoint_url": s3_server.endpoint_url,
        "key": s3_server.key_id,
        "secret": s3_server.secret,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    prefix = unique("by-options")
    settings_with(
        monkeypatch, storage_url=s3_server.url(prefix), storage_options=json.dumps(options)
    )
    tenant_id, key = make_tenant()
    health, upload = health_and_upload(tenant_id, key, "stored")
    assert health.json()["storage"] is True, health.text
    assert upload.status_code == 202, upload.text
    (document_id,) = upload.json()["documentIds"]
    stored = s3_server.fs().find(f"{s3_server.bucket}/{prefix}")
    assert [p for p in stored if p.endswith(f"/{document_id}.png")], stored
    assert s3_server.secret not in health.text + upload.text


def test_an_upload_while_storage_is_down_is_a_503_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with seaweedfs(tmp_path / "s3") as server:
        settings_with(
            monkeypatch,
            home=tmp_path / "home",
            api_port=free_port(),
            prefect_port=free_port(),
            **server.settings(storage="blobs"),
        )
        stack = Stack(get_settings())
        # The API alone: storage fails before anything would reach Prefect.
        prepare_home(stack.settings)
        upgrade_database(stack.settings.database_url)
        try:
            stack.start_api()
            tenant_id, key = make_tenant()
            with httpx.Client(base_url=stack.settings.api_url, timeout=120) as api:
                assert api.get("/health").json()["storage"] is True
                server.stop()
                health = api.get("/health")
                upload = api.post(
                    f"/api/documents/bulk-upload?tenantId={tenant_id}",
                    files=files_part([("one.png", documents.document("lost", "png"))]),
                    headers={"X-API-Key": key},
                )
        finally:
            stack.stop()

    assert health.json()["storage"] is False and health.json()["status"] == "degraded"
    assert upload.status_code == 503, upload.text
    assert set(upload.json()) == {"error"}
    assert _batches_of(tenant_id) == 0
    staging = tmp_path / "home" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    logged = "".join(p.read_text(errors="replace") for p in (tmp_path / "home" / "logs").iterdir())
    assert "storage" in logged  # said in the log, for the operator
    for text in (logged, health.text, upload.text):
        assert server.secret not in text


def test_the_inbox_on_s3_takes_a_settled_file_once_and_hands_back_results(
    s3_api: httpx.Client, s3_stack: Stack, s3_server: S3Server
) -> None:
    tenant_id, key = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    settings = s3_stack.settings
    fs = s3_server.fs()
    folder = f"{settings.inbox_url.removeprefix('s3://')}/{tenant_id}"
    phrase = documents.phrase(7)
    fs.pipe_file(f"{folder}/scan.png", documents.document(phrase, "png", seed=7))
    fs.pipe_file(f"{folder}/notes.txt", b"just some text")

    def scan() -> inbox.IngestReport:
        return inbox_store.ingest_store_folder(tenant_id, tenant, settle=1)

    first = scan()  # seen once: not yet taken, however old
    assert first.batches == [] and sorted(first.waiting) == ["notes.txt", "scan.png"]
    time.sleep(1.1)
    # Two workers scanning at once: one takes the files, the other skips the folder.
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: scan(), range(2)))
    batches = [b for r in reports for b in r.batches]
    assert len(batches) == 1
    assert any(r.rejected for r in reports)
    assert fs.cat_file(f"{folder}/rejected/notes.txt") == b"just some text"
    assert fs.cat_file(f"{folder}/rejected/notes.txt.reason.txt").strip()
    assert fs.exists(f"{folder}/scan.png")  # kept until its document is Ready

    batch = wait_for_batch(s3_api, key, batches[0], timeout=240)
    assert [d["status"] for d in batch["documents"]] == ["Ready"]
    later = scan()
    assert later.batches == [] and later.done == ["scan.png"]
    assert not fs.exists(f"{folder}/scan.png")
    assert scan().batches == []  # and never taken again
    results = f"{settings.outbox_url.removeprefix('s3://')}/{tenant_id}"
    deadline = time.monotonic() + 60  # written just after the batch is Completed
    while not fs.exists(f"{results}/batch-{batches[0]}.json") and time.monotonic() < deadline:
        time.sleep(0.5)
    text = fs.cat_file(f"{results}/scan.png.txt").decode()
    assert documents.words(phrase) <= documents.words(text), text
    summary = json.loads(fs.cat_file(f"{results}/batch-{batches[0]}.json"))
    assert summary["succeeded"] == 1
    assert _batches_of(tenant_id) == 1


def test_one_scan_at_a_time_per_folder_across_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the scan's lock is the database's, which every machine shares."""
    with postgres_schema() as url:
        settings_with(monkeypatch, database_url=url)
        with inbox_store._scan_lock("s3://b/inbox|t1") as first:
            with inbox_store._scan_lock("s3://b/inbox|t1") as second:
                assert first and not second
            with inbox_store._scan_lock("s3://b/inbox|t2") as other:
                assert other
        with inbox_store._scan_lock("s3://b/inbox|t1") as again:
            assert again


def _batches_of(tenant_id: str) -> int:
    from docpipe.db import session_scope
    from docpipe.models import Batch

    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(Batch.tenant_id == tenant_id)) or 0)
