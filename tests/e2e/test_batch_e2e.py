"""One batch end to end: HTTP upload, the process-batch flow on a real worker, the summary."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, Log, TaskRun

from tests import documents
from tests.helpers import files_part, wait_for_batch

pytestmark = pytest.mark.e2e


def task_runs_of(flow_run_id: str, *, count: int) -> list[TaskRun]:
    """The flow run's task runs, once the server has recorded `count` of them in end states.

    The server writes task-run states from their events about once a second, so Prefect's
    view may lag the batch's by that much.
    """
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            finished = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(finished) >= count or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def finished_flow_run(flow_run_id: str) -> FlowRun:
    """The flow run once Prefect has recorded its final state (just after the batch's)."""
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(flow_run_id))
            if (run.state and run.state.is_final()) or time.monotonic() > deadline:
                return run
            time.sleep(0.5)


def flow_run_logs(flow_run_id: str, *, until: str) -> list[Log]:
    """The flow run's logs in Prefect (the UI's Logs tab), once one says `until`.

    A flow run sends its logs to the server every couple of seconds, and last as it ends.
    """
    deadline = time.monotonic() + 30
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=log_filter)
            if any(until in log.message for log in logs) or time.monotonic() > deadline:
                return logs
            time.sleep(0.5)


def test_ten_documents_two_corrupted(
    api: httpx.Client, tenant: tuple[str, str], prefect_api: None
) -> None:
    tenant_id, key = tenant
    files, texts = documents.ten_files_two_broken()
    response = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part(files),
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "Queued"
    assert len(accepted["documentIds"]) == 10

    batch = wait_for_batch(api, key, accepted["batchId"])

    assert batch["status"] == "Completed"
    assert (batch["totalDocuments"], batch["completedDocuments"]) == (10, 10)
    assert (batch["successCount"], batch["failureCount"]) == (8, 2)
    assert [d["id"] for d in batch["documents"]] == accepted["documentIds"]
    by_name = {d["fileName"]: d for d in batch["documents"]}
    assert by_name["cut.pdf"]["status"] == "ValidationFailed"
    assert "PDF does not open" in by_name["cut.pdf"]["error"]
    assert by_name["cut.png"]["status"] == "ValidationFailed"
    assert "image does not decode" in by_name["cut.png"]["error"]
    for name, text in texts.items():
        document = by_name[name]
        assert document["status"] == "Ready", document
        ocr = api.get(f"/api/documents/{document['id']}/text", headers={"X-API-Key": key})
        assert ocr.status_code == 200
        assert ocr.headers["content-type"].startswith("text/plain")
        assert documents.words(text) <= documents.words(ocr.text), (name, ocr.text)

    # The summary ran exactly once, after every document's tasks had finished.
    runs = task_runs_of(batch["flowRunId"], count=11)
    summaries = [r for r in runs if r.name.startswith("summarize-")]
    assert len(summaries) == 1
    document_runs = [r for r in runs if not r.name.startswith("summarize-")]
    # One task run per document, named by its file, corrupted or not; the corrupted ones
    # failed, with why.
    assert sorted(r.name for r in document_runs) == sorted(name for name, _ in files)
    failed = [r for r in document_runs if r.state is not None and r.state.is_failed()]
    assert len(failed) == 2
    assert all(r.state and r.state.message and "does not" in r.state.message for r in failed)
    last_document_end = max(r.end_time for r in document_runs if r.end_time)
    assert summaries[0].start_time is not None
    assert summaries[0].start_time >= last_document_end
    assert batch["completedAt"] >= max(d["processedAt"] for d in batch["documents"])

    # The logs say what went wrong and how the batch ended, without a line for every
    # document that went right: its task run's state says that.
    logs = flow_run_logs(batch["flowRunId"], until="8 succeeded, 2 failed")
    task_lines = [log.message for log in logs if log.task_run_id is not None]
    assert [m for m in task_lines if m.startswith("Finished in state Failed")], task_lines
    assert not [m for m in task_lines if m.startswith("Finished in state Completed")]
    assert any("8 succeeded, 2 failed" in m for m in task_lines), task_lines

    # The run list tells it from a batch that went right at a glance.
    run = finished_flow_run(batch["flowRunId"])
    assert run.state is not None and run.state.type.value == "COMPLETED"
    assert (run.state.name, run.state.message) == ("Completed with failures", "8 of 10 succeeded")
    assert "outcome:some-failed" in run.tags and f"tenant:{tenant_id}" in run.tags


def test_progress_and_summary_artifacts_show_in_prefect(
    api: httpx.Client, tenant: tuple[str, str], prefect_api: None
) -> None:
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
    )

    tenant_id, key = tenant
    files = [(f"{i}.png", documents.document(documents.phrase(i), "png", seed=i)) for i in range(3)]
    files.append(("cut.pdf", documents.truncated(documents.document("X", "pdf"))))
    accepted = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part(files),
    ).json()
    batch_id = accepted["batchId"]
    assert wait_for_batch(api, key, batch_id)["status"] == "Completed"

    def latest(artifact_key: str) -> Any:
        with get_client(sync_client=True) as client:
            found = client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(
                    key=ArtifactCollectionFilterKey(any_=[artifact_key])
                )
            )
        assert len(found) == 1
        return found[0]

    progress = latest(f"batch-{batch_id}")
    assert progress.type == "progress"
    assert float(progress.data) == 100.0
    assert progress.description == "4 of 4 documents finished"
    summary = latest(f"batch-{batch_id}-summary")
    assert summary.type == "table"
    assert summary.description == f"Batch {batch_id} complete: 3 succeeded, 1 failed"
    # Its table names what each document's outputs are, to fetch by the API, and counts
    # whole pages: none for the document that failed its checks.
    rows = json.loads(summary.data) if isinstance(summary.data, str) else summary.data
    assert [(row["outputs"], row["pages"]) for row in rows] == [("text, pdf", 1)] * 3 + [("", None)]
