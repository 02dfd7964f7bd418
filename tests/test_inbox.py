"""Folder ingestion: settled files become batches; bad ones are set aside with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from docpipe import inbox
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch
from docpipe.tenants import get_tenant
from tests import documents
from tests.conftest import make_tenant, wait_for_batch

pytestmark = pytest.mark.e2e


def drop(folder: Path, name: str, data: bytes, *, age: float = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def batch_count(tenant_id: str) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(Batch.tenant_id == tenant_id)) or 0)


def good(i: int) -> tuple[str, bytes]:
    kind = ["png", "pdf", "jpeg", "tiff"][i % 4]
    return f"scan-{i}.{kind}", documents.document(documents.phrase(i), kind, seed=i)


def test_150_files_become_two_batches_and_bad_ones_are_rejected(
    api: httpx.Client, stack: object
) -> None:
    tenant_id, key = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    folder = get_settings().inbox / tenant_id
    for i in range(149):
        drop(folder, *good(i))
    drop(folder, "notes.txt", b"just some text")
    drop(folder, "blank.png", b"")
    drop(folder, "growing.png", good(999)[1][:100], age=0)  # still being written

    report = inbox.ingest_folder(folder, tenant, settle=5)

    assert len(report.batches) == 2
    assert report.waiting == ["growing.png"]
    assert report.rejected == {
        "notes.txt": "not a PDF, PNG, JPEG or TIFF (judged by the file's content)",
        "blank.png": "file is empty",
    }
    rejected = folder / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [
        "blank.png",
        "blank.png.reason.txt",
        "notes.txt",
        "notes.txt.reason.txt",
    ]
    assert (rejected / "notes.txt.reason.txt").read_text().startswith("not a PDF")
    assert visible(folder) == ["growing.png", "rejected"]
    sizes = []
    for batch_id in report.batches:
        batch = wait_for_batch(api, key, batch_id)
        assert batch["status"] == "Completed" and batch["failureCount"] == 0
        sizes.append(batch["totalDocuments"])
    assert sizes == [100, 49]
    names = {
        d["fileName"]: d["id"] for d in wait_for_batch(api, key, report.batches[0])["documents"]
    }
    text = api.get(f"/api/documents/{names['scan-0.png']}/text", headers={"X-API-Key": key}).text
    assert documents.words(documents.phrase(0)) <= documents.words(text)

    # The file finishes being written; a later scan takes it.
    drop(folder, "growing.png", good(999)[1])
    later = inbox.ingest_folder(folder, tenant, settle=5)
    assert len(later.batches) == 1 and later.waiting == []
    assert batch_count(tenant_id) == 3


def test_a_crash_after_commit_neither_loses_nor_doubles_a_file(
    stack: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, _ = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    folder = get_settings().inbox / tenant_id
    for i in range(3):
        drop(folder, *good(i))

    def crash(paths: list[Path]) -> None:
        raise KeyboardInterrupt("killed between commit and clean-up")

    monkeypatch.setattr(inbox, "_remove", crash)
    with pytest.raises(KeyboardInterrupt):
        inbox.ingest_folder(folder, tenant, settle=5)
    monkeypatch.undo()
    assert batch_count(tenant_id) == 1
    assert len(visible(folder)) == 3  # nothing lost

    again = inbox.ingest_folder(folder, tenant, settle=5)

    assert again.batches == []
    assert sorted(again.duplicates) == [good(i)[0] for i in range(3)]
    assert batch_count(tenant_id) == 1  # nothing ingested twice
    assert visible(folder) == []


def test_a_folder_without_a_tenant_is_left_alone(stack: object) -> None:
    folder = get_settings().inbox / "nobody-by-this-name"
    dropped = drop(folder, *good(1))

    report = inbox.scan_inbox()

    assert "nobody-by-this-name" in report.unknown_tenants
    assert dropped.exists()


def test_ingest_command_scans_one_folder(tmp_path: Path, stack: object) -> None:
    tenant_id, _ = make_tenant()
    for i in range(2):
        drop(tmp_path / "scans", *good(i))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "docpipe"),
            "ingest",
            str(tmp_path / "scans"),
            "--tenant",
            tenant_id,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["batches"]) == 1
    assert batch_count(tenant_id) == 1


def test_the_flow_takes_a_tenant_and_a_folder(
    tmp_path: Path, stack: object, prefect_api: None
) -> None:
    from flows.ingest_folder import ingest_folder

    tenant_id, _ = make_tenant()
    drop(tmp_path, *good(3))
    result = ingest_folder(tenant_id=tenant_id, folder=str(tmp_path))
    assert len(result["batches"]) == 1
    assert ingest_folder(tenant_id="nobody-at-all")["unknownTenants"] == ["nobody-at-all"]


def test_one_scan_at_a_time_per_folder(stack: object) -> None:
    tenant_id, _ = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    folder = get_settings().inbox / tenant_id
    drop(folder, *good(1))
    with inbox._scan_lock(folder) as locked:  # another scan is at work
        assert locked
        assert inbox.ingest_folder(folder, tenant, settle=5) == inbox.IngestReport()
    assert visible(folder) == [good(1)[0]]
    assert len(inbox.ingest_folder(folder, tenant, settle=5).batches) == 1


def test_scheduled_deployments_exist(stack: object, prefect_api: None) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in ("ingest-folder/ingest-folder", "recover-batches/recover-batches"):
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_queue_name == "critical"
            [schedule] = deployment.schedules
            assert schedule.schedule.interval.total_seconds() == 86400  # as configured
        process = client.read_deployment_by_name("process-batch/process-batch")
        assert process.parameter_openapi_schema["required"] == ["batch_id"]
        ingest = client.read_deployment_by_name("ingest-folder/ingest-folder")
        described = ingest.parameter_openapi_schema["properties"]
        assert "Only this tenant" in described["tenant_id"]["description"]
        assert "Scan this folder" in described["folder"]["description"]
