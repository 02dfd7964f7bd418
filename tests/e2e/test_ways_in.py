"""Every way in behaves the same: runs started from the Prefect UI (through the same Prefect
API calls the UI makes) or from Python, cancels from the UI, and the CLI's small things."""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import select

from docpipe import batches
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import BatchStatus, Document, DocumentStatus
from docpipe.recovery import run_recovery_pass
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import is_tesseract, make_tenant, post_batch, prefect_http, wait_for_batch

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def stored_batch(tenant_id: str, pages: int = 1) -> str:
    """A batch accepted but never handed to Prefect, as one waiting for a run from the UI."""
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    files = [
        (f"scan-{i}.png", io.BytesIO(documents.document(documents.phrase(i), "png", seed=i)))
        for i in range(pages)
    ]
    with stage_files(files, get_settings()) as staged:
        return batches.create_batch(tenant, staged).batch_id


def finished_batch(api: httpx.Client, tenant_id: str, key: str, pages: int = 1) -> str:
    """A batch that ran, and whose first page's OCR then failed (the fault: Tesseract was
    killed): something for a run from the UI to redo. Unlike a batch waiting for its turn,
    no dispatch elsewhere in the stack hands it to Prefect meanwhile."""
    files = [
        (f"scan-{i}.png", documents.document(documents.phrase(i), "png", seed=i))
        for i in range(pages)
    ]
    batch_id = post_batch(api, tenant_id, key, files)
    assert wait_for_batch(api, key, batch_id)["status"] == "Completed"
    with session_scope() as session:
        first = session.scalars(
            select(Document).where(Document.batch_id == batch_id, Document.position == 0)
        ).one()
        first.status = DocumentStatus.OCR_FAILED
    return batch_id


def after_rerun(api: httpx.Client, key: str, batch_id: str, before: str | None) -> dict[str, Any]:
    """The batch once a run other than `before` has finished it."""
    deadline = time.monotonic() + 120
    while True:
        batch = wait_for_batch(api, key, batch_id)
        if batch["flowRunId"] not in (None, before):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)


def run_from_the_ui(stack: Any, batch_id: str) -> str:
    """Deployments -> process-batch -> Run -> Custom run: the UI's own two API calls."""
    with prefect_http(stack.settings) as prefect:
        deployment = prefect.get("/deployments/name/process-batch/process-batch").json()
        created = prefect.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"batch_id": batch_id}, "state": {"type": "SCHEDULED"}},
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def flow_run(flow_run_id: str, *, until_final: bool = True) -> Any:
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(flow_run_id))
            if not until_final or (run.state and run.state.is_final()):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {flow_run_id} still {run.state}")
            time.sleep(0.5)


def test_a_vip_batch_run_from_the_ui_is_named_tagged_and_run_on_the_vip_queue(
    stack: Any, api: httpx.Client, prefect_api: None
) -> None:
    tenant_id, key = make_tenant("vip")
    batch_id = finished_batch(api, tenant_id, key)

    before = batches.find_batch(tenant_id, batch_id).flow_run_id
    made = run_from_the_ui(stack, batch_id)  # on the deployment's queue, "incoming"
    batch = after_rerun(api, key, batch_id, before)

    assert (batch["status"], batch["successCount"]) == ("Completed", 1)
    assert batch["flowRunId"] != made
    withdrawn = flow_run(made)
    assert withdrawn.state.type.value == "CANCELLED"
    assert (
        withdrawn.state.message
        == f"moved to queue 'critical', the vip tier's, as batch-{batch_id}-2, in its turn"
    )
    ran = flow_run(batch["flowRunId"])
    assert (ran.name, ran.work_queue_name) == (f"batch-{batch_id}-2", "critical")
    assert {f"tenant:{tenant_id}", "tier:vip", "outcome:all-succeeded"} <= set(ran.tags)


def test_the_readmes_from_python_block_runs_a_batch(
    stack: Any, api: httpx.Client, prefect_api: None
) -> None:
    """The README's block, as it is, but for this stack's port and home."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- from-python[^>]*-->\n```sh\n(.*?)```", readme, re.S)
    assert block is not None
    script = block.group(1).replace(
        "127.0.0.1:4200", f"{stack.settings.prefect_host}:{stack.settings.prefect_port}"
    )
    tenant_id, key = make_tenant()
    batch_id = finished_batch(api, tenant_id, key)
    before = batches.find_batch(tenant_id, batch_id).flow_run_id

    result = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "BATCH": batch_id,
            "HOME": str(stack.settings.home),
            "DOCPIPE_HOME": str(stack.settings.home),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    run_id, state = result.stdout.split()
    assert state == "Scheduled"
    made = flow_run(run_id)
    batch = after_rerun(api, key, batch_id, before)
    assert (batch["status"], batch["successCount"]) == ("Completed", 1)
    assert (
        made.state.message
        == f"moved to queue 'batch', the standard tier's, as batch-{batch_id}-2, in its turn"
    )
    ran = flow_run(batch["flowRunId"])
    assert (ran.name, ran.work_queue_name) == (f"batch-{batch_id}-2", "batch")
    assert {f"tenant:{tenant_id}", "tier:standard"} <= set(ran.tags)


def test_a_rerun_from_the_ui_is_the_batchs_second_run(
    stack: Any, api: httpx.Client, tenant: tuple[str, str], prefect_api: None
) -> None:
    tenant_id, key = tenant
    cut = documents.truncated(documents.document("X", "pdf"))
    files = [("cut.pdf", cut), ("a.png", documents.document(documents.phrase(3), "png"))]
    batch_id = post_batch(api, tenant_id, key, files)
    first = wait_for_batch(api, key, batch_id)
    assert (first["successCount"], first["failureCount"]) == (1, 1)
    # The page's OCR failed (the fault: Tesseract was killed), which a re-run redoes; the
    # cut PDF failed validation, which it does not.
    with session_scope() as session:
        page = session.scalars(select(Document).where(Document.batch_id == batch_id)).all()
        next(d for d in page if d.file_name == "a.png").status = DocumentStatus.OCR_FAILED

    made = run_from_the_ui(stack, batch_id)
    assert flow_run(made).state.type.value == "CANCELLED"  # moved to the tier's queue
    deadline = time.monotonic() + 60
    while (successor := batches.find_batch(tenant_id, batch_id).flow_run_id) in (
        None,
        first["flowRunId"],
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ran = flow_run(successor or "")

    assert (ran.name, ran.work_queue_name) == (f"batch-{batch_id}-2", "batch")
    assert ran.state.name == "Completed with failures"
    assert ran.state.message == "1 of 2 succeeded"
    assert {f"tenant:{tenant_id}", "tier:standard", "outcome:some-failed"} <= set(ran.tags)


@pytest.mark.parametrize("case", ["unknown", "cancelled", "all-ready"])
def test_a_ui_run_for_a_batch_that_may_not_run_ends_at_once_with_its_reason(
    stack: Any, api: httpx.Client, tenant: tuple[str, str], prefect_api: None, case: str
) -> None:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    tenant_id, key = tenant
    batch_id = stored_batch(tenant_id)
    reason = {
        "unknown": "no batch 'no-such-batch'",
        "cancelled": f"batch {batch_id} was cancelled",
        "all-ready": f"batch {batch_id} is Completed and every document is Ready",
    }[case]
    if case == "unknown":
        batch_id = "no-such-batch"
    elif case == "cancelled":
        batches.mark_cancelled(tenant_id, batch_id)
    else:
        run_from_the_ui(stack, batch_id)
        wait_for_batch(api, key, batch_id)
    before = None if case == "unknown" else batches.find_batch(tenant_id, batch_id)

    ran = flow_run(run_from_the_ui(stack, batch_id))

    assert ran.state.type.value == "CANCELLED"
    assert ran.state.message == f"Not run: {reason}"
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[ran.id])))
    assert [log.message for log in logs] == [f"Not run: {reason}"]  # one line, no traceback
    if before is not None:
        after = batches.find_batch(tenant_id, batch_id)
        assert (after.status, after.completed_at) == (before.status, before.completed_at)
        assert [d.status for d in after.documents] == [d.status for d in before.documents]


def test_a_cancel_from_the_ui_cancels_the_batch_and_it_stays_cancelled(
    stack: Any, api: httpx.Client, tenant: tuple[str, str], prefect_api: None
) -> None:
    tenant_id, key = tenant
    pages = [
        (f"{i}.pdf", documents.multipage_pdf([documents.phrase(i * 10 + p) for p in range(4)]))
        for i in range(6)
    ]
    batch_id = post_batch(api, tenant_id, key, pages)
    running = wait_for_batch(api, key, batch_id, until=("Processing",))
    deadline = time.monotonic() + 120
    while not any(d["status"] in ("Processing", "Ready") for d in running["documents"]):
        assert time.monotonic() < deadline
        running = wait_for_batch(api, key, batch_id, until=("Processing",))

    with prefect_http(stack.settings) as prefect:  # the UI's Cancel button
        answer = prefect.post(
            f"/flow_runs/{running['flowRunId']}/set_state",
            json={"state": {"type": "CANCELLING", "name": "Cancelling"}},
        )
    assert answer.status_code in (200, 201), answer.text
    batch = wait_for_batch(api, key, batch_id, timeout=60)

    assert batch["status"] == "Cancelled"
    assert "Cancelled" in {d["status"] for d in batch["documents"]}
    assert batch["completedDocuments"] == batch["totalDocuments"] == 6
    assert batch["completedDocuments"] == (
        batch["successCount"] + batch["failureCount"] + batch["cancelledCount"]
    )
    assert flow_run(running["flowRunId"]).state.type.value == "CANCELLED"
    assert batch_id not in run_recovery_pass(sweep=False).resubmitted
    assert batches.find_batch(tenant_id, batch_id).status == BatchStatus.CANCELLED


def test_queues_say_what_they_are_for(stack: Any, prefect_api: None) -> None:
    with get_client(sync_client=True) as client:
        queues = {q.name: q for q in client.read_work_queues(work_pool_name="docpipe")}
    assert set(queues) == {"critical", "batch", "incoming", "default"}
    assert "VIP" in (queues["critical"].description or "")
    assert "Standard" in (queues["batch"].description or "")
    assert "No worker takes runs from here" in (queues["incoming"].description or "")
    assert "docpipe puts nothing here" in (queues["default"].description or "")
    assert queues["default"].priority > queues["batch"].priority > queues["critical"].priority


def test_the_cli_tells_its_version_and_a_wrong_key_where_to_look(stack: Any) -> None:
    from tests.helpers import cli

    assert cli(stack, "--version").strip() == "docpipe 0.1.0"
    wrong = httpx.get(
        f"{stack.settings.api_url}/api/batches?tenantId=x", headers={"X-API-Key": "dp_nope"}
    )
    assert wrong.status_code == 401
    assert "DOCPIPE_HOME" in wrong.json()["error"]
    assert str(stack.settings.home) not in wrong.text  # the hint names no path


def test_the_ui_run_form_says_what_batch_id_is_and_where_to_find_it(stack: Any) -> None:
    with prefect_http(stack.settings) as prefect:
        deployment = prefect.get("/deployments/name/process-batch/process-batch").json()
    field = deployment["parameter_openapi_schema"]["properties"]["batch_id"]
    description = " ".join(field["description"].split())
    assert "the `batchId` an upload answered with" in description
    assert "GET /api/batches?tenantId=" in description


def test_a_burst_of_ui_runs_processes_the_batch_once(
    stack: Any, api: httpx.Client, prefect_api: None
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    tenant_id, key = make_tenant()
    batch_id = finished_batch(api, tenant_id, key, pages=2)
    first_run = batches.find_batch(tenant_id, batch_id).flow_run_id

    made = [run_from_the_ui(stack, batch_id) for _ in range(5)]
    for run_id in made:
        flow_run(run_id)  # each withdrawn: one moved, four refused
    batch = after_rerun(api, key, batch_id, first_run)

    assert (batch["status"], batch["successCount"]) == ("Completed", 2)
    messages = [flow_run(m).state.message or "" for m in made]
    assert sum(m.startswith("moved to queue 'batch'") for m in messages) == 1, messages
    assert sum(m.startswith("Not run: ") for m in messages) == 4, messages
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"batch-{batch_id}"))
        )
    # docpipe's first run, and one more: not one a UI run
    assert sorted(str(r.id) for r in runs) == sorted([first_run, batch["flowRunId"]])


@pytest.mark.parametrize(("tier", "niceness"), [("standard", 10), ("vip", 0)])
def test_a_ui_run_ocrs_at_its_tiers_cpu_priority(
    stack: Any, api: httpx.Client, prefect_api: None, tier: str, niceness: int
) -> None:
    import psutil

    tenant_id, key = make_tenant(tier)
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    pdf = documents.multipage_pdf([documents.phrase(40 + p) for p in range(8)])
    with stage_files([("long.pdf", io.BytesIO(pdf))], get_settings()) as staged:
        batch_id = batches.create_batch(tenant, staged).batch_id
    # Started for this run: an earlier run's engine may idle on for a moment. (Not by
    # start time: psutil's is reckoned from a boot time in whole seconds, up to 1 s early.)
    earlier = {proc.pid for proc in psutil.process_iter(["name", "cmdline"]) if is_tesseract(proc)}
    run_from_the_ui(stack, batch_id)

    services = {service.process.pid for service in stack.services}
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while not seen and time.monotonic() < deadline:
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:  # this stack's Tesseract processes: flow runs are the warm starter's children
                if (
                    proc.pid not in earlier
                    and is_tesseract(proc)
                    and services & {p.pid for p in proc.parents()}
                ):
                    seen.add(proc.nice())
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    wait_for_batch(api, key, batch_id)

    assert seen == {niceness}
