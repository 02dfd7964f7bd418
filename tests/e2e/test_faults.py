"""Real faults: processes killed with signals in the middle of the work."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from docpipe.runtime.stack import process_trees
from tests import documents
from tests.helpers import cli, files_part, wait_for_batch

pytestmark = pytest.mark.e2e


def kill_tree(stack: Any, name: str) -> None:
    """SIGKILL a service and everything it started, as if its machine went away."""
    service = next(s for s in stack.services if s.name == name)
    procs = process_trees([service.process.pid])
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)
    stack.services.remove(service)
    service.log_file.close()


def rows(home: Path, sql: str) -> list[Any]:
    engine = create_engine(f"sqlite:///{home / 'docpipe.db'}")
    with engine.connect() as connection:
        result = list(connection.execute(text(sql)).all())
    engine.dispose()
    return result


@pytest.fixture
def fast_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow runs beat every second; two seconds of silence means dead."""
    monkeypatch.setenv("DOCPIPE_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("DOCPIPE_STALE_AFTER_SECONDS", "5")


def test_worker_killed_mid_batch(fast_recovery: None, own_stack: Any) -> None:
    key = json.loads(cli(own_stack, "tenant", "create", "acme", "--json"))["apiKey"]
    headers = {"X-API-Key": key}
    files = [
        (f"{i}.png", documents.document(documents.phrase(i), "png", seed=i)) for i in range(20)
    ]
    with httpx.Client(base_url=own_stack.settings.api_url, timeout=60) as api:
        response = api.post(
            "/api/documents/bulk-upload?tenantId=acme", headers=headers, files=files_part(files)
        )
        batch_id = response.json()["batchId"]
        deadline = time.monotonic() + 120
        while True:
            batch = api.get(f"/api/batches/{batch_id}", headers=headers).json()
            if batch["successCount"] >= 3:
                break
            assert time.monotonic() < deadline, batch
            time.sleep(0.2)

        kill_tree(own_stack, "worker")
        before = api.get(f"/api/batches/{batch_id}", headers=headers).json()
        ready_before = {
            d["id"]: d["processedAt"] for d in before["documents"] if d["status"] == "Ready"
        }
        assert 3 <= len(ready_before) < 20
        own_stack.start_worker(name="docpipe-worker-2")

        deadline = time.monotonic() + 90
        while batch_id not in json.loads(cli(own_stack, "recover"))["resubmitted"]:
            assert time.monotonic() < deadline, "recovery never resubmitted the batch"
            time.sleep(2)
        done = wait_for_batch(api, key, batch_id, timeout=300)

    assert done["status"] == "Completed"
    assert (done["successCount"], done["failureCount"]) == (20, 0)
    assert done["flowRunId"] != before["flowRunId"]
    for document in done["documents"]:
        if document["id"] in ready_before:  # not OCR'd again
            assert document["processedAt"] == ready_before[document["id"]]
    texts = rows(
        own_stack.settings.home,
        f"SELECT count(*) FROM documents WHERE batch_id = '{batch_id}' AND text_key IS NOT NULL",
    )
    assert texts == [(20,)]


@pytest.mark.parametrize("moment", ["staging", "storing"])
def test_api_killed_mid_upload_leaves_all_or_nothing(own_stack: Any, moment: str) -> None:
    key = json.loads(cli(own_stack, "tenant", "create", "acme", "--json"))["apiKey"]
    home: Path = own_stack.settings.home
    big = [
        (
            f"{i}.png",
            documents.encode(documents.page_image([documents.phrase(i)] * 30, noise=False), "png"),
        )
        for i in range(60)
    ]
    outcome: dict[str, Any] = {}

    def upload() -> None:
        try:
            with httpx.Client(base_url=own_stack.settings.api_url, timeout=60) as api:
                outcome["response"] = api.post(
                    "/api/documents/bulk-upload?tenantId=acme",
                    headers={"X-API-Key": key},
                    files=files_part(big),
                )
        except httpx.HTTPError as e:
            outcome["error"] = e

    sender = threading.Thread(target=upload)
    sender.start()
    blobs, staging = home / "blobs" / "acme", home / "staging"
    deadline = time.monotonic() + 60
    while True:
        if moment == "staging" and staging.exists() and any(staging.rglob("0030")):
            break  # half the files are staged
        if moment == "storing" and blobs.exists() and any(blobs.rglob("*.png")):
            break  # the first files are in storage, the batch is not committed yet
        assert time.monotonic() < deadline
        time.sleep(0.002)
    kill_tree(own_stack, "api")
    sender.join(timeout=60)
    assert "error" in outcome or outcome["response"].status_code == 202

    own_stack.start_api()
    report = json.loads(cli(own_stack, "recover", DOCPIPE_ORPHAN_GRACE_SECONDS="0"))

    batches = rows(home, "SELECT id FROM batches WHERE tenant_id = 'acme'")
    docs = rows(home, "SELECT storage_key FROM documents WHERE tenant_id = 'acme'")
    stored = sorted(
        str(p.relative_to(home / "blobs"))
        for p in (home / "blobs").rglob("*")
        if p.is_file() and not p.name.endswith(".txt")
    )
    if batches:  # the commit happened: the whole batch is there
        assert len(docs) == 60
        assert stored == sorted(k for (k,) in docs)
    else:  # it did not: nothing is
        assert docs == [] and stored == []
    assert not staging.exists() or list(staging.iterdir()) == []
    if moment == "storing" and not batches:  # files were stored and then swept away
        assert any(k.startswith("acme/") for k in report["orphansRemoved"])
