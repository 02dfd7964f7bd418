"""Cancel and retry through the API, against the real worker and Prefect server."""

from __future__ import annotations

import time

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)
from prefect.client.schemas.objects import StateType

from loadtest.pages import page_png
from tests import documents
from tests.helpers import files_part, wait_for_batch

pytestmark = pytest.mark.e2e


def upload(api: httpx.Client, tenant: tuple[str, str], files: list[tuple[str, bytes]]) -> str:
    tenant_id, key = tenant
    response = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        files=files_part(files),
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batchId"])


def pages(n: int) -> list[tuple[str, bytes]]:
    return [(f"{i}.png", documents.document(documents.phrase(i), "png", seed=i)) for i in range(n)]


def test_cancel_then_retry(api: httpx.Client, tenant: tuple[str, str], prefect_api: None) -> None:
    _, key = tenant
    headers = {"X-API-Key": key}
    # Whole A4 pages: a batch of them is still running when the cancel comes, however
    # quickly its pages are shared out over the cores.
    batch_id = upload(api, tenant, [(f"{i}.png", page_png(i)) for i in range(20)])
    wait_for_batch(api, key, batch_id, until=("Processing",), timeout=120)

    cancelled = api.post(f"/api/batches/{batch_id}/cancel", headers=headers)

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "Cancelled"
    statuses = {d["status"] for d in body["documents"]}
    assert statuses <= {"Ready", "Cancelled"} and "Cancelled" in statuses
    assert all(
        d["error"] == "batch was cancelled" for d in body["documents"] if d["status"] == "Cancelled"
    )
    # The run stops, and nothing it was doing turns the batch back.
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while (run := client.read_flow_run(body["flowRunId"])).state_type != StateType.CANCELLED:
            assert time.monotonic() < deadline, run.state
            time.sleep(1)
        # A cancel is no crash: the task runs it stopped end Cancelled, not Crashed after
        # a retry their Tesseract's death set off, and the run logs no error for it.
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
        assert not [t.name for t in task_runs if t.state_type == StateType.CRASHED]
        errors = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]), level=LogFilterLevel(ge_=40))
        )
        assert not [log.message for log in errors]
    after = api.get(f"/api/batches/{batch_id}", headers=headers).json()
    assert after["status"] == "Cancelled"
    assert [d["status"] for d in after["documents"]] == [d["status"] for d in body["documents"]]
    again = api.post(f"/api/batches/{batch_id}/cancel", headers=headers)
    assert again.status_code == 409
    assert again.json()["error"] == "batch is already Cancelled"

    retried = api.post(f"/api/batches/{batch_id}/retry", headers=headers)

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "Processing"
    assert retried.json()["flowRunId"] != body["flowRunId"]
    busy = api.post(f"/api/batches/{batch_id}/retry", headers=headers)
    assert busy.status_code == 409
    assert "still" in busy.json()["error"]
    done = wait_for_batch(api, key, batch_id)
    assert done["status"] == "Completed"
    assert (done["successCount"], done["failureCount"]) == (20, 0)
    ready_before = {d["id"]: d["processedAt"] for d in body["documents"] if d["status"] == "Ready"}
    for document in done["documents"]:
        if document["id"] in ready_before:  # not redone
            assert document["processedAt"] == ready_before[document["id"]]
    nothing = api.post(f"/api/batches/{batch_id}/retry", headers=headers)
    assert nothing.status_code == 409
    assert nothing.json()["error"] == "nothing to retry: every document is Ready"


@pytest.mark.parametrize("when", ["scheduled", "pending", "pending again"])
def test_a_batch_cancelled_as_it_starts_ends_cancelled_in_prefect(
    api: httpx.Client, tenant: tuple[str, str], prefect_api: None, when: str
) -> None:
    """Cancelled before a worker takes its run, or while the run's process starts: the
    run ends, not left Cancelling for minutes (a new user's first cancel was)."""
    _, key = tenant
    headers = {"X-API-Key": key}
    batch_id = upload(api, tenant, [(f"{i}.png", page_png(i)) for i in range(16)])
    flow_run_id = api.get(f"/api/batches/{batch_id}", headers=headers).json()["flowRunId"]
    with get_client(sync_client=True) as client:
        if when != "scheduled":  # the worker has taken it; its process is starting
            deadline = time.monotonic() + 30
            while client.read_flow_run(flow_run_id).state_type == StateType.SCHEDULED:
                assert time.monotonic() < deadline
                time.sleep(0.02)

        cancelled = api.post(f"/api/batches/{batch_id}/cancel", headers=headers)

        assert cancelled.status_code == 200, cancelled.text
        deadline = time.monotonic() + 60
        while (run := client.read_flow_run(flow_run_id)).state_type not in (
            StateType.CANCELLED,
            StateType.COMPLETED,
        ):
            assert time.monotonic() < deadline, run.state
            time.sleep(1)
    # A run whose process got as far as reading the batch refuses it, as documented.
    assert run.state_type == StateType.CANCELLED or run.state_name == "Not run", run.state
    assert wait_for_batch(api, key, batch_id)["status"] == "Cancelled"


def test_retry_reprocesses_only_failed_documents(
    api: httpx.Client, tenant: tuple[str, str]
) -> None:
    _, key = tenant
    headers = {"X-API-Key": key}
    files = [*pages(2), ("cut.pdf", documents.truncated(documents.document("X", "pdf")))]
    batch_id = upload(api, tenant, files)
    first = wait_for_batch(api, key, batch_id)
    assert (first["successCount"], first["failureCount"]) == (2, 1)

    # A file that failed validation reads the same next time: redone only when asked.
    same = api.post(f"/api/batches/{batch_id}/retry", headers=headers)
    assert same.status_code == 409 and "includeInvalid=true" in same.json()["error"]
    retried = api.post(f"/api/batches/{batch_id}/retry?includeInvalid=true", headers=headers)
    assert retried.status_code == 202
    second = wait_for_batch(api, key, batch_id)

    assert second["status"] == "Completed"
    assert (second["successCount"], second["failureCount"]) == (2, 1)
    before = {d["fileName"]: d for d in first["documents"]}
    after = {d["fileName"]: d for d in second["documents"]}
    assert after["0.png"]["processedAt"] == before["0.png"]["processedAt"]
    assert after["cut.pdf"]["processedAt"] > before["cut.pdf"]["processedAt"]
    assert after["cut.pdf"]["status"] == "ValidationFailed"


def test_cancel_and_retry_need_the_owner(api: httpx.Client, tenant: tuple[str, str]) -> None:
    from tests.helpers import make_tenant

    batch_id = upload(api, tenant, pages(1))
    _, other_key = make_tenant()
    for action in ("cancel", "retry"):
        response = api.post(f"/api/batches/{batch_id}/{action}", headers={"X-API-Key": other_key})
        assert response.status_code == 404
