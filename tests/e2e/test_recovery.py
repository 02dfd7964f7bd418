"""Recovery: batches accepted while Prefect was down, and flow runs that died."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.states import Crashed, Scheduled

from docpipe import batches
from docpipe.config import get_settings
from docpipe.models import BatchStatus, Tier
from docpipe.orchestrator import PROCESS_BATCH_DEPLOYMENT, run_tags
from docpipe.recovery import run_recovery_pass
from docpipe.runtime.stack import Stack
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import cli, make_tenant, started_stack, wait_for_batch

pytestmark = pytest.mark.e2e


@pytest.fixture
def recovering_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose API runs its recovery pass every second."""
    with started_stack(tmp_path, recovery_interval_seconds=1) as stack:
        yield stack


def test_a_batch_accepted_while_prefect_is_down_completes_once_it_is_back(
    recovering_stack: Stack,
) -> None:
    stack = recovering_stack
    key = json.loads(cli(stack, "tenant", "create", "acme", "--json"))["apiKey"]
    stack.stop_service("prefect-server")

    with httpx.Client(base_url=stack.settings.api_url, timeout=60) as api:
        text = documents.phrase(5)
        response = api.post(
            "/api/documents/upload?tenantId=acme",
            headers={"X-API-Key": key},
            files={"file": ("a.png", documents.document(text, "png"))},
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]
        queued = api.get(f"/api/batches/{batch_id}", headers={"X-API-Key": key}).json()
        assert (queued["status"], queued["flowRunId"]) == ("Queued", None)
        assert api.get("/health").json()["prefect"] is False

        # Nobody runs anything by hand: the API's own recovery pass submits it.
        stack.start_server()
        done = wait_for_batch(api, key, batch_id, timeout=120)

        assert (done["status"], done["successCount"]) == ("Completed", 1)
        ocr = api.get(
            f"/api/documents/{response.json()['documentId']}/text", headers={"X-API-Key": key}
        )
        assert documents.words(text) <= documents.words(ocr.text)
    assert f"'submitted': ['{batch_id}']" in (stack.log_dir / "api.log").read_text()
    # And a pass by hand finds nothing left to do: the batch was submitted once.
    assert json.loads(cli(stack, "recover"))["submitted"] == []


def one_page_batch(seed: int) -> tuple[str, str]:
    """A new tenant's one-page batch, stored but not submitted: (tenant id, batch id)."""
    tenant_id, _ = make_tenant()
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    png = documents.document(documents.phrase(seed), "png")
    with stage_files([("a.png", io.BytesIO(png))], get_settings()) as staged:
        return tenant_id, batches.create_batch(tenant, staged).batch_id


def crashed_batch(submissions_left: int) -> str:
    """A batch whose flow run crashed without closing it."""
    tenant_id, batch_id = one_page_batch(seed=1)
    # docpipe's own runs (with its tags, so the worker does not adopt them), scheduled for
    # tomorrow, so no worker takes them, then crashed.
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(PROCESS_BATCH_DEPLOYMENT)
        for _ in range(get_settings().max_submissions - submissions_left):
            run = client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"batch_id": batch_id},
                state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1)),
                tags=run_tags(tenant_id, Tier.STANDARD),
            )
            client.set_flow_run_state(run.id, Crashed(message="worker died"), force=True)
            batches.record_submission(batches.next_submission(batch_id), str(run.id))
    batches.set_status(batch_id, BatchStatus.PROCESSING)
    return batch_id


def test_a_crashed_run_is_resubmitted(api: httpx.Client, prefect_api: None) -> None:
    batch_id = crashed_batch(submissions_left=2)
    crashed_run = batches.find_batch(batches.get_batch_tenant(batch_id), batch_id).flow_run_id

    report = run_recovery_pass()

    assert batch_id in report.resubmitted
    batch = batches.find_batch(batches.get_batch_tenant(batch_id), batch_id)
    assert batch.flow_run_id != crashed_run
    assert batch.submissions == 2


def test_a_batch_that_keeps_crashing_ends_failed_with_a_reason(prefect_api: None) -> None:
    batch_id = crashed_batch(submissions_left=0)

    report = run_recovery_pass()

    assert batch_id in report.failed
    batch = batches.find_batch(batches.get_batch_tenant(batch_id), batch_id)
    assert batch.status == BatchStatus.FAILED
    assert batch.error == (
        "gave up after 3 flow runs: its flow run ended crashed without finishing the batch"
    )
    assert batch_id not in run_recovery_pass().resubmitted


def test_a_busy_prefect_is_asked_again_and_submits_once(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 (on SQLite: "database is locked") is a busy server, not a missing one: Prefect's
    own client asks again (docpipe.orchestrator.CLIENT_RETRIES)."""
    from docpipe.dispatch import submit_batch

    tenant_id, batch_id = one_page_batch(seed=2)
    real_send = httpx.Client.send
    calls: list[int] = []

    def busy_twice(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if request.url.path.endswith("/create_flow_run"):
            calls.append(1)
            if len(calls) == 1:  # the fault: the server answers 503 once
                return httpx.Response(503, request=request, headers={"Retry-After": "0.1"})
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", busy_twice)

    flow_run_id = submit_batch(batch_id)

    assert flow_run_id is not None
    assert len(calls) >= 2  # more if the real server was busy too
    batch = batches.find_batch(tenant_id, batch_id)
    assert batch.flow_run_id == flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"batch-{batch_id}"]))
        )
    assert [str(r.id) for r in runs] == [flow_run_id]  # asked again, submitted once


def test_a_recovery_pass_that_breaks_does_not_end_the_apis_recovery() -> None:
    import anyio

    from docpipe.recovery import RecoveryReport, recover_periodically

    passes: list[int] = []

    def breaks_once(sweep: bool) -> RecoveryReport:
        passes.append(1)
        if len(passes) == 1:  # the fault: the database was away for this pass
            raise RuntimeError("database is gone")
        return RecoveryReport()

    async def main() -> None:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(recover_periodically, 0.01, breaks_once)
                while len(passes) < 3:
                    await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()

    anyio.run(main)
    assert len(passes) >= 3


@pytest.mark.parametrize(
    ("sweep_interval", "sweeps"), [(3600, [True, False, False]), (0, [True, True, True])]
)
def test_the_apis_recovery_lists_all_storage_at_its_first_pass_then_once_an_hour(
    sweep_interval: float, sweeps: list[bool]
) -> None:
    """Looking for orphans lists every stored file; a pass every minute need not."""
    import anyio

    from docpipe.recovery import RecoveryReport, recover_periodically

    asked: list[bool] = []

    def recover(sweep: bool) -> RecoveryReport:
        asked.append(sweep)
        return RecoveryReport()

    async def main() -> None:
        with anyio.move_on_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(
                    functools.partial(
                        recover_periodically, 0.01, recover, sweep_interval=sweep_interval
                    )
                )
                while len(asked) < 3:
                    await anyio.sleep(0.01)
                tasks.cancel_scope.cancel()

    anyio.run(main)
    assert asked[:3] == sweeps
