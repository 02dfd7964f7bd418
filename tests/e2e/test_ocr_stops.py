"""OCR stops with its run: a cancel or a killed run leaves no Tesseract reading on, and no
temporary page files behind."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests import documents
from tests.helpers import is_tesseract, make_tenant, post_batch, wait_for_batch

pytestmark = pytest.mark.e2e


def tesseracts(home: Path) -> list[psutil.Process]:
    """The Tesseract processes reading this home's pages: the program, or the child of
    the in-process engine (its command names the run's page folder)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        # Not the engines of this test process's own in-process OCR (other tests'): idle.
        if proc.info["ppid"] == os.getpid():
            continue
        if is_tesseract(proc) and any(str(home) in part for part in cmdline):
            found.append(proc)
    return found


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def long_batch(api: httpx.Client, tenant_id: str, key: str) -> str:
    """Documents that take Tesseract far longer than the test waits for it to stop."""
    pdfs = [
        (
            f"long-{i}.pdf",
            documents.multipage_pdf([documents.phrase(i * 20 + p) for p in range(15)]),
        )
        for i in range(4)
    ]
    return post_batch(api, tenant_id, key, pdfs)


def scratch_files(home: Path) -> list[Path]:
    return [p for p in (home / "tmp").rglob("*") if p.is_file()]


def test_a_cancel_stops_tesseract_at_once_and_leaves_no_page_files(
    api: httpx.Client, docpipe_home: Path
) -> None:
    tenant_id, key = make_tenant()
    batch_id = long_batch(api, tenant_id, key)
    wait_until(lambda: tesseracts(docpipe_home), 120, "Tesseract started")

    cancelled = api.post(f"/api/batches/{batch_id}/cancel", headers={"X-API-Key": key})

    assert cancelled.status_code == 200
    # Each document had minutes of pages left: Tesseract reading on would still be here.
    wait_until(lambda: not tesseracts(docpipe_home), 30, "every Tesseract stopped")
    wait_until(lambda: not scratch_files(docpipe_home), 30, "the page files removed")
    batch = wait_for_batch(api, key, batch_id)
    assert batch["status"] == "Cancelled"


def test_a_killed_run_takes_its_tesseracts_and_the_next_run_removes_its_files(
    api: httpx.Client, docpipe_home: Path
) -> None:
    tenant_id, key = make_tenant()
    killed = long_batch(api, tenant_id, key)
    [first, *_] = wait_until(lambda: tesseracts(docpipe_home), 120, "Tesseract started")
    flow_run = first.parent()
    assert flow_run is not None
    left = {p for p in (docpipe_home / "tmp").iterdir() if str(flow_run.pid) in p.name}
    assert left, "the run's scratch folder is named after it"

    flow_run.kill()  # SIGKILL: nothing of the run's own can clean up

    wait_until(lambda: not tesseracts(docpipe_home), 10, "its Tesseracts died with it")
    other_id, other_key = make_tenant()
    small = post_batch(
        api, other_id, other_key, [("a.png", documents.document(documents.phrase(9), "png"))]
    )
    assert wait_for_batch(api, other_key, small)["status"] == "Completed"
    assert not any(p.exists() for p in left)
    # Recovery is off in the tests: end the batch, so it holds no slot for the rest.
    api.post(f"/api/batches/{killed}/cancel", headers={"X-API-Key": key})
