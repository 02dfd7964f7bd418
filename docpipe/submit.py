"""Hand a batch to Prefect: one flow run of the process-batch deployment on the tier's queue."""

from __future__ import annotations

import logging

from docpipe.batches import record_submission
from docpipe.config import get_settings
from docpipe.models import Tier

log = logging.getLogger(__name__)

PROCESS_BATCH_DEPLOYMENT = "process-batch/process-batch"
QUEUES = {Tier.VIP: "critical", Tier.STANDARD: "batch"}
QUEUE_PRIORITIES = {"critical": 1, "batch": 2}


def queue_for(tier: Tier) -> str:
    return QUEUES[tier]


def prefect_settings() -> dict[object, object]:
    """Prefect client settings for this docpipe installation."""
    from prefect.settings import (
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
    )

    settings = get_settings()
    return {
        PREFECT_API_URL: settings.prefect_api_url,
        PREFECT_API_REQUEST_TIMEOUT: settings.submit_timeout_seconds,
        PREFECT_CLIENT_MAX_RETRIES: 1,
    }


def submit_batch(batch_id: str, *, tenant_id: str, tier: Tier) -> str | None:
    """Create the batch's flow run; None if Prefect is unreachable (the batch stays Queued)."""
    from prefect.deployments import run_deployment
    from prefect.settings import temporary_settings

    try:
        with temporary_settings(updates=prefect_settings()):  # type: ignore[arg-type]
            flow_run = run_deployment(
                PROCESS_BATCH_DEPLOYMENT,
                parameters={"batch_id": batch_id},
                flow_run_name=f"batch-{batch_id}",
                work_queue_name=queue_for(tier),
                idempotency_key=f"batch-{batch_id}",
                tags=[f"tenant:{tenant_id}", f"tier:{tier.value}"],
                timeout=0,
                as_subflow=False,
            )
    except Exception as e:  # any failure to reach Prefect leaves the batch Queued, not lost
        log.warning("batch %s accepted but not submitted to Prefect: %s", batch_id, e)
        return None
    flow_run_id = str(flow_run.id)  # type: ignore[union-attr]  # sync call returns a FlowRun
    record_submission(batch_id, flow_run_id)
    return flow_run_id
