"""Hand a batch to Prefect: one flow run of the process-batch deployment on the tier's queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from docpipe.batches import next_submission, record_submission
from docpipe.config import get_settings
from docpipe.home import prefect_auth_string
from docpipe.models import Tier

log = logging.getLogger(__name__)

PROCESS_BATCH_DEPLOYMENT = "process-batch/process-batch"
QUEUES = {Tier.VIP: "critical", Tier.STANDARD: "batch"}
QUEUE_PRIORITIES = {"critical": 1, "batch": 2}


def queue_for(tier: Tier) -> str:
    return QUEUES[tier]


@contextmanager
def prefect_client_settings() -> Iterator[None]:
    """Talk to this installation's Prefect server, and give up quickly if it is down."""
    import prefect.context

    current = prefect.context.get_settings_context()
    with prefect.context.SettingsContext(
        profile=current.profile, settings=_client_settings(current.settings)
    ):
        yield


# Prefect settings derived for clients, by the settings they were derived from: building
# them reads every environment variable and profile again (0.1 s), and a scheduled
# recovery pass asked for them twice.
_derived: dict[int, tuple[Any, Any, dict[Any, Any]]] = {}


def _client_settings(base: Any) -> Any:
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
    )

    settings = get_settings()
    updates = {
        PREFECT_API_URL: settings.prefect_api_url,
        PREFECT_API_AUTH_STRING: prefect_auth_string(settings),
        PREFECT_API_REQUEST_TIMEOUT: settings.submit_timeout_seconds,
        PREFECT_CLIENT_MAX_RETRIES: 1,
    }
    cached = _derived.get(id(base))
    if cached is None or cached[0] is not base or cached[2] != updates:
        if len(_derived) > 8:
            _derived.clear()
        cached = _derived[id(base)] = (base, base.copy_with_update(updates=updates), updates)
    return cached[1]


# An answering server that is busy (503: on SQLite, "database is locked") is asked again
# after these pauses; a server that does not answer at all is given up on at once.
BUSY_RETRY_PAUSES = (0.5, 1.0, 2.0)


def _server_busy(error: Exception) -> bool:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) == 503


def submit_batch(batch_id: str) -> str | None:
    """Create the batch's next flow run; None if Prefect is unreachable (the batch stays Queued)."""
    from prefect.deployments import run_deployment

    submission = next_submission(batch_id)
    for attempt, pause in enumerate((*BUSY_RETRY_PAUSES, None)):
        try:
            with prefect_client_settings():
                flow_run = run_deployment(
                    PROCESS_BATCH_DEPLOYMENT,
                    parameters={"batch_id": batch_id},
                    flow_run_name=f"batch-{batch_id}",
                    work_queue_name=queue_for(submission.tier),
                    # The same submission asked twice (a lost answer) makes one flow run.
                    idempotency_key=f"batch-{batch_id}-{submission.number}",
                    tags=[f"tenant:{submission.tenant_id}", f"tier:{submission.tier.value}"],
                    timeout=0,
                    as_subflow=False,
                )
            break
        except Exception as e:  # any failure to reach Prefect leaves the batch Queued, not lost
            if pause is not None and _server_busy(e):
                log.info("Prefect is busy (attempt %d); asking again", attempt + 1)
                time.sleep(pause)
                continue
            log.warning("batch %s accepted but not submitted to Prefect: %s", batch_id, e)
            return None
    flow_run_id = str(flow_run.id)  # type: ignore[union-attr]  # sync call returns a FlowRun
    record_submission(submission, flow_run_id)
    return flow_run_id


def cancel_flow_run(flow_run_id: str) -> bool:
    """Ask Prefect to cancel a flow run (the worker kills it); False if Prefect is unreachable."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    try:
        with prefect_client_settings(), get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, State(type=StateType.CANCELLING))
    except Exception as e:
        log.warning("could not cancel flow run %s: %s", flow_run_id, e)
        return False
    return True
