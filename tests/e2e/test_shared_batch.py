"""One batch over many workers: a big batch is shared by helper runs any worker takes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from docpipe.runtime.stack import process_trees
from loadtest.pages import page_png
from tests import documents
from tests.helpers import (
    cli,
    files_part,
    is_tesseract,
    make_tenant,
    prefect_http,
    settings_with,
    started_by,
    started_stack,
    wait_for_batch,
)

pytestmark = pytest.mark.e2e

# Every batch of more than two pages is shared; one page at a time per run, so that the
# runs of both workers are needed to keep up.
SHARED = {
    "split_pages": 2,
    "ocr_concurrency": 1,
    # The batch's own run fills its worker: its helpers have to go to the other one.
    "worker_limit": 1,
    "dispatch_slots": 2,
    "heartbeat_seconds": 1,
    "stale_after_seconds": 8,
    "ingest_interval_seconds": 86400,
    "recovery_interval_seconds": 86400,
    "recovery_schedule_seconds": 86400,
}


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Any]:
    """A stack with a second worker (its own warm starter) on the same pool."""
    with started_stack(tmp_path, **SHARED) as stack:
        stack.start_warm_starter("second")
        stack.start_worker("second")
        yield stack


def upload(stack: Any, files: list[tuple[str, bytes]]) -> tuple[httpx.Client, str, str]:
    key = json.loads(cli(stack, "tenant", "create", "acme", "--json"))["apiKey"]
    api = httpx.Client(base_url=stack.settings.api_url, timeout=60)
    response = api.post(
        "/api/documents/bulk-upload?tenantId=acme",
        headers={"X-API-Key": key},
        files=files_part(files),
    )
    assert response.status_code == 202, response.text
    return api, key, str(response.json()["batchId"])


def runs_tagged(stack: Any, tag: str) -> list[dict[str, Any]]:
    with prefect_http(stack.settings) as prefect:
        response = prefect.post("/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [tag]}}})
        response.raise_for_status()
        return list(response.json())


def claims(stack: Any, batch_id: str) -> dict[str, str | None]:
    """Which flow run did each document of the batch."""
    from docpipe.db import session_scope
    from docpipe.models import Document

    with stack_settings(stack), session_scope() as session:
        rows = session.execute(
            select(Document.file_name, Document.claimed_by).where(Document.batch_id == batch_id)
        ).all()
    return {name: run for name, run in rows}


class stack_settings:
    """This process reads the stack's database for the block."""

    def __init__(self, stack: Any) -> None:
        self.url = stack.settings.database_url

    def __enter__(self) -> None:
        import os

        from docpipe.config import get_settings

        self.saved = os.environ.get("DOCPIPE_DATABASE_URL")
        os.environ["DOCPIPE_DATABASE_URL"] = self.url
        get_settings.cache_clear()

    def __exit__(self, *_: object) -> None:
        import os

        from docpipe.config import get_settings

        if self.saved is None:
            os.environ.pop("DOCPIPE_DATABASE_URL", None)
        else:
            os.environ["DOCPIPE_DATABASE_URL"] = self.saved
        get_settings.cache_clear()


def test_a_big_batch_is_shared_by_both_workers_and_summarised_once(two_workers: Any) -> None:
    stack = two_workers
    good = [
        (f"page-{i}.png", documents.document(documents.phrase(i), "png", seed=i)) for i in range(8)
    ]
    bad = [("broken.png", documents.truncated(documents.document("lost", "png")))]
    api, key, batch_id = upload(stack, good + bad)

    # Progress counts every run's documents, read as the batch goes.
    finished_counts = set()
    deadline = time.monotonic() + 240
    while (batch := api.get(f"/api/batches/{batch_id}", headers={"X-API-Key": key}).json())[
        "status"
    ] not in ("Completed", "Failed", "Cancelled"):
        finished_counts.add(batch["completedDocuments"])
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)

    assert batch["status"] == "Completed"
    assert (batch["successCount"], batch["failureCount"]) == (8, 1)
    assert batch["completedDocuments"] == batch["totalDocuments"] == 9
    assert any(0 < n < 9 for n in finished_counts), finished_counts
    by_name = {d["fileName"]: d for d in batch["documents"]}
    assert by_name["broken.png"]["status"] == "ValidationFailed"
    assert by_name["broken.png"]["error"]
    for i, (name, _) in enumerate(good):
        text = api.get(
            f"/api/documents/{by_name[name]['id']}/text", headers={"X-API-Key": key}
        ).text
        assert documents.words(documents.phrase(i)) <= documents.words(text), (name, text)

    # The batch's own run and its helpers, shown as its subflows, on the batch's queue.
    deadline = time.monotonic() + 60
    # A helper with nothing left to take ends by itself, a moment after the batch.
    while True:
        helpers = runs_tagged(stack, f"part-of:{batch_id}")
        if all(h["state_type"] in ("COMPLETED", "CANCELLED") for h in helpers):
            break
        assert time.monotonic() < deadline, helpers
        time.sleep(0.5)
    assert helpers, "no helper runs were started"
    own = next(r for r in runs_tagged(stack, "tenant:acme") if r["name"] == f"batch-{batch_id}")
    assert all(h["parent_task_run_id"] for h in helpers)
    assert {h["work_queue_name"] for h in helpers} == {"batch"}

    # Both workers' runs took documents: the batch's own run on one worker, helpers on
    # the other, as the own run held its worker's only slot. Which worker takes the own
    # run is a race (both are woken by it; the server turns one away).
    done_by = set(claims(stack, batch_id).values())
    assert own["id"] in done_by
    helpers_that_worked = done_by & {h["id"] for h in helpers}
    assert helpers_that_worked, done_by
    logs = {
        name: (stack.log_dir / f"{name}.log").read_text() for name in ("worker", "worker-second")
    }

    def ran_on(run: str) -> set[str]:
        return {name for name, log in logs.items() if started_by(log, run)}

    assert len(ran_on(own["id"])) == 1, ran_on(own["id"])
    assert any(ran_on(str(run)) - ran_on(own["id"]) for run in helpers_that_worked)

    # One summary, by the batch's own run.
    query = {"task_runs": {"name": {"like_": f"summarize-{batch_id}"}}}
    deadline = time.monotonic() + 30  # task runs reach the server as events, a little later
    with prefect_http(stack.settings) as prefect:
        while not (summaries := prefect.post("/task_runs/filter", json=query).json()):
            assert time.monotonic() < deadline, "no summary task run"
            time.sleep(0.5)
    assert [s["flow_run_id"] for s in summaries] == [own["id"]]
    # The batch's progress in the Prefect UI counts the helpers' documents too.
    latest = {"artifacts": {"key": {"any_": [f"batch-{batch_id}"]}}}
    with prefect_http(stack.settings) as prefect:
        (progress,) = prefect.post("/artifacts/latest/filter", json=latest).json()
    assert progress["description"] == "9 of 9 documents finished"


def test_a_cancel_stops_the_helpers_too(two_workers: Any) -> None:
    stack = two_workers
    api, key, batch_id = upload(stack, [(f"{i}.png", page_png(i)) for i in range(12)])
    deadline = time.monotonic() + 120
    while not any(h["state_type"] == "RUNNING" for h in runs_tagged(stack, f"part-of:{batch_id}")):
        assert time.monotonic() < deadline, "no helper run started"
        time.sleep(0.5)

    response = api.post(f"/api/batches/{batch_id}/cancel", headers={"X-API-Key": key})

    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while True:
        states = {h["name"]: h["state_type"] for h in runs_tagged(stack, f"part-of:{batch_id}")}
        reading = [p for p in process_trees(s.process.pid for s in stack.services)]
        busy = [p for p in reading if _reads(p)]
        if set(states.values()) <= {"CANCELLED", "COMPLETED"} and not busy:
            break
        assert time.monotonic() < deadline, (states, busy)
        time.sleep(0.5)
    batch = api.get(f"/api/batches/{batch_id}", headers={"X-API-Key": key}).json()
    assert batch["status"] == "Cancelled"


def _reads(proc: psutil.Process) -> bool:
    try:
        proc.info = proc.as_dict(["name", "cmdline"])
        return is_tesseract(proc)
    except psutil.NoSuchProcess:
        return False


def test_a_helper_killed_mid_batch_loses_nothing(two_workers: Any) -> None:
    stack = two_workers
    api, key, batch_id = upload(stack, [(f"{i}.png", page_png(i)) for i in range(10)])
    deadline = time.monotonic() + 120
    while True:
        held = {run for run in claims(stack, batch_id).values() if run not in (None, "-")}
        helpers = {h["id"] for h in runs_tagged(stack, f"part-of:{batch_id}")}
        if working := held & helpers:
            break
        assert time.monotonic() < deadline, "no helper took a document"
        time.sleep(0.2)
    # The worker running that helper (not the batch's own run, which fills the other one):
    # its whole tree is killed, the helper's document in hand.
    helper = working.pop()
    name = next(n for n in ("worker", "worker-second") if helper in _log(stack, n))
    stems = (name, name.replace("worker", "warm-starter"))
    killed = [s for s in stack.services if _log_stem(s) in stems]
    for proc in process_trees(s.process.pid for s in killed):
        proc.kill()

    batch = wait_for_batch(api, key, batch_id, timeout=300)

    assert batch["status"] == "Completed"
    assert batch["successCount"] == 10, [d["error"] for d in batch["documents"]]
    states = {h["id"]: h["state_type"] for h in runs_tagged(stack, f"part-of:{batch_id}")}
    assert states[helper] == "CRASHED", states


def _log(stack: Any, name: str) -> str:
    return (stack.log_dir / f"{name}.log").read_text()


def _log_stem(service: Any) -> str:
    return Path(service.log_file.name).stem


@pytest.mark.parametrize("takers", [4])
def test_each_document_is_taken_by_one_run(
    database: str, takers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs asking at once never take the same document (SQLite and PostgreSQL)."""
    from docpipe import parts

    settings_with(monkeypatch, split_pages=1)
    from docpipe.db import session_scope
    from docpipe.models import Batch, Document, Tier

    tenant_id, _ = make_tenant()
    with session_scope() as session:
        batch = Batch(tenant_id=tenant_id, tier=Tier.STANDARD)
        session.add(batch)
        session.flush()
        batch_id = batch.id
        ids = []
        for position in range(40):
            doc = Document(
                batch_id=batch_id,
                tenant_id=tenant_id,
                position=position,
                file_name=f"{position}.png",
                kind="png",
                size_bytes=1,
                sha256="0" * 64,
                storage_key=f"k{position}",
            )
            session.add(doc)
            session.flush()
            ids.append(doc.id)
    assert parts.open_round(batch_id, ids) == 7  # 40 pages, 1 a part, 8 runs at most
    taken: dict[str, list[str]] = {f"run-{n}": [] for n in range(takers)}

    def take(run: str) -> None:
        while claim := parts.claim_next(batch_id, run):
            taken[run].append(claim.document_id)
            parts.release(claim.document_id, run)

    threads = [threading.Thread(target=take, args=(run,)) for run in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [d for run in taken.values() for d in run]
    assert sorted(every) == sorted(ids)
    assert parts.round_state(batch_id).open == 0
