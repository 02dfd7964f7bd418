"""Retention on the real stack: an old batch's flow runs, task runs, logs and artifacts leave
Prefect with it; a new batch's stay."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from docpipe.db import session_scope
from docpipe.models import Batch, utcnow
from docpipe.orchestrator import progress_key, run_name, summary_key
from docpipe.storage import batch_folder, get_storage
from tests import documents
from tests.helpers import cli, post_batch, wait_for_batch

pytestmark = pytest.mark.e2e
T = TypeVar("T")


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30) -> T:
    """What `read` gives once `done` says so (Prefect records states and logs a little
    after the batch's database does), or the last answer after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done(answer := read()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return answer


def history(client: SyncPrefectClient, batch_id: str) -> dict[str, Any]:
    """What Prefect holds of a batch: its runs' ids, their task runs and logs, its artifacts."""
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name(batch_id, 1)]))
    )
    return {
        "runs": [r.id for r in runs if r.state and r.state.is_final()],
        "artifacts": sorted(
            {
                a.key or ""
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=[progress_key(batch_id), summary_key(batch_id)])
                    )
                )
            }
        ),
    } | children(client, [r.id for r in runs])


def children(client: SyncPrefectClient, run_ids: list[UUID]) -> dict[str, int]:
    """How many task runs and log lines these flow runs have (read directly, not through
    the runs, which may be gone)."""
    task_runs = client.read_task_runs(
        task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=run_ids))
    )
    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
    return {"task_runs": len(task_runs), "logs": len(logs)}


def recorded(client: SyncPrefectClient, batch_id: str) -> dict[str, Any]:
    """The batch's history once Prefect has all of it: an ended run, both artifacts, the
    task runs and some logs."""
    return eventually(
        lambda: history(client, batch_id),
        lambda h: (
            bool(h["runs"]) and len(h["artifacts"]) == 2 and h["task_runs"] >= 2 and h["logs"] > 0
        ),
    )


def test_an_old_batch_leaves_prefect_with_its_rows_and_files_and_a_new_one_stays(
    stack: Any, api: httpx.Client, prefect_api: None, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    # Runs of the scheduled flows that end before `boundary`: DOCPIPE_PREFECT_RETENTION_DAYS
    # will reach back to just after it.
    off: FlowRun = run_deployment("expire-history/expire-history", timeout=120)  # type: ignore[assignment]
    recovered: FlowRun = run_deployment("recover-batches/recover-batches", timeout=120)  # type: ignore[assignment]
    assert off.state is not None and off.state.is_completed()
    with get_client(sync_client=True) as client:
        off_logs = eventually(
            lambda: client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[off.id]))
            ),
            lambda logs: any("retention is off" in log.message for log in logs),
        )
        assert any("retention is off" in log.message for log in off_logs)  # the stack's default
    boundary = utcnow()
    time.sleep(10)

    old, new = (
        post_batch(
            api, tenant_id, key, [("scan.png", documents.document(documents.phrase(i), "png"))]
        )
        for i in range(2)
    )
    for batch_id in (old, new):
        assert wait_for_batch(api, key, batch_id)["status"] == "Completed"
    with get_client(sync_client=True) as client:
        before = {b: recorded(client, b) for b in (old, new)}
    for batch_id in (old, new):
        assert len(before[batch_id]["runs"]) == 1
        assert before[batch_id]["artifacts"] == sorted(
            [progress_key(batch_id), summary_key(batch_id)]
        )
        assert before[batch_id]["task_runs"] == 2  # the document's and the summary's
    with session_scope() as session:
        batch = session.get(Batch, old)
        assert batch is not None
        batch.completed_at = utcnow() - timedelta(days=40)
    storage = get_storage()
    new_files = storage.keys(batch_folder(tenant_id, new))
    assert len(storage.keys(batch_folder(tenant_id, old))) == len(new_files) >= 3

    # Reaching back to 5 s after `boundary`, however long the command takes to start.
    reach = (utcnow() - boundary - timedelta(seconds=5)) / timedelta(days=1)
    report = json.loads(
        cli(
            stack,
            "expire",
            DOCPIPE_RETENTION_DAYS="30",
            DOCPIPE_PREFECT_RETENTION_DAYS=repr(reach),
        )
    )

    assert (report["batches"], report["documents"], report["prefectReachable"]) == (1, 1, True)
    assert report["flowRuns"] >= 3 and report["artifacts"] >= 2
    assert api.get(f"/api/batches/{old}", headers={"X-API-Key": key}).status_code == 404
    assert storage.keys(batch_folder(tenant_id, old)) == []
    kept = api.get(f"/api/batches/{new}", headers={"X-API-Key": key}).json()
    assert kept["status"] == "Completed"
    text = api.get(f"/api/documents/{kept['documents'][0]['id']}/text", headers={"X-API-Key": key})
    assert text.status_code == 200
    assert storage.keys(batch_folder(tenant_id, new)) == new_files
    with get_client(sync_client=True) as client:
        gone = eventually(
            lambda: history(client, old) | children(client, before[old]["runs"]),
            lambda h: h["logs"] == 0,  # the server deletes logs just after their run
        )
        assert gone == {"runs": [], "artifacts": [], "task_runs": 0, "logs": 0}
        after = history(client, new)
        assert after["logs"] >= before[new]["logs"] > 0
        assert after | {"logs": 0} == before[new] | {"logs": 0}
        for run in (off, recovered):
            with pytest.raises(ObjectNotFound):
                client.read_flow_run(run.id)
