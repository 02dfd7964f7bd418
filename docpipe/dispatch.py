"""Hand batches to Prefect when it is their turn, and take them back on a cancel.

Round-robin across a tier's tenants, with room always kept for VIP work: Prefect serves a
queue first come, first served, and a worker whose slots are all busy makes even a VIP
run wait. So a batch is submitted only when its tier has room (DOCPIPE_DISPATCH_SLOTS, of
which DOCPIPE_VIP_RESERVED_SLOTS standard work never takes), and the next one is chosen by
`batches.next_to_dispatch`. Dispatch runs after every upload, when a batch ends, after a
cancel or a retry, and in every recovery pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import BinaryIO

from docpipe import batches, orchestrator, webhooks
from docpipe.config import Settings, get_settings
from docpipe.db import exclusive
from docpipe.errors import Conflict, DocpipeError
from docpipe.models import BatchStatus, Tenant
from docpipe.ocr import check_languages
from docpipe.uploads import stage_files

log = logging.getLogger(__name__)


def accept_batch(
    tenant: Tenant,
    files: Iterable[tuple[str | None, BinaryIO]],
    settings: Settings,
    *,
    language: str | None = None,
    callback_url: str | None = None,
) -> batches.CreatedBatch:
    """Check and store an upload as one batch, then start it if it is its turn.

    `language` (Tesseract's codes joined by '+') overrides the tenant's for this batch;
    `callback_url`, the tenant's webhook. The staging copies are gone before Prefect is
    asked: a slow Prefect holds no disk.
    """
    language = check_languages(
        language or tenant.languages or settings.ocr_language,
        max_languages=settings.ocr_max_languages,
    )
    if callback_url is not None:
        callback_url = webhooks.check_url(callback_url)
        if tenant.webhook_secret is None:
            raise DocpipeError(
                "a callbackUrl needs the tenant's webhook secret, to sign with: ask for "
                "`docpipe tenant rotate-webhook-secret <tenant>`"
            )
    with stage_files(files, settings) as staged:
        created = batches.create_batch(tenant, staged, language=language, callback_url=callback_url)
    dispatch()
    return created


def cancel(tenant_id: str, batch_id: str) -> None:
    """Cancel an unfinished batch here first, then its flow run in Prefect.

    The batch is Cancelled in docpipe's database whatever Prefect says; a run that still
    starts later sees that and does nothing.
    """
    flow_run_id = batches.mark_cancelled(tenant_id, batch_id)
    if flow_run_id is not None:
        orchestrator.stop_flow_run(flow_run_id, "Not run: the batch was cancelled")
        # A shared batch's helper runs stop too (a batch that was not shared has none).
        orchestrator.stop_helper_runs(batch_id, "the batch was cancelled", running=True)
    dispatch()  # its slot is free for the next batch


def retry(tenant_id: str, batch_id: str, *, include_invalid: bool = False) -> None:
    """Put a finished batch's failed and cancelled documents through again, in turn;
    within the tenant's limits on open work, as an upload is."""
    batches.prepare_retry(tenant_id, batch_id, include_invalid=include_invalid)
    if batch_id in dispatch():
        batches.set_status(batch_id, BatchStatus.PROCESSING)


def adopt_flow_run(flow_run_id: str) -> str | None:
    """Take a process-batch run someone started outside docpipe (the Prefect UI, Python)
    into docpipe's turns, before it starts; returns the batch's id if it was taken.

    The run itself is withdrawn, its message saying where the batch went. The batch goes in
    line as a retry does: it runs on its tier's queue, named and tagged as docpipe's own
    runs, never ahead of its turn or in the room kept for VIP work, and never while another
    run of it is on its way. A run for a batch that may not run ends with the reason.
    """
    run = orchestrator.read_flow_run(flow_run_id)
    if run is None or orchestrator.is_labelled(run.tags) or run.state != "SCHEDULED":
        return None
    batch_id = run.batch_id or ""
    if (reason := batches.refusal(batch_id, flow_run_id, from_outside=True)) is not None:
        orchestrator.withdraw_flow_run(flow_run_id, f"Not run: {reason}")
        return None
    batch = batches.get_any_batch(batch_id)
    assert batch is not None
    successor = orchestrator.run_name(batch.id, batches.next_submission(batch.id).number)
    queue = orchestrator.queue_for(batch.tier)
    moved = f"moved to queue {queue!r}, the {batch.tier.value} tier's, as {successor}"
    # Withdrawn first: of two callers (a repeated event, the recovery pass) only the one
    # that withdrew it puts the batch in line.
    if not orchestrator.withdraw_flow_run(flow_run_id, f"{moved}, in its turn"):
        return None
    if batch.status.is_final:
        batches.requeue(batch.id)
    dispatch()
    log.info("flow run %s for batch %s: %s", flow_run_id, batch.id, moved)
    return batch.id


def cancelled_in_prefect(flow_run_id: str) -> str | None:
    """A batch's flow run was cancelled in Prefect (its UI, `prefect flow-run cancel`): end
    the batch Cancelled, as the API's cancel does; returns its id."""
    batch = batches.find_by_flow_run(flow_run_id)
    if batch is None or batch.status.is_final:
        return None
    try:
        batches.mark_cancelled(batch.tenant_id, batch.id)
    except Conflict:  # it finished meanwhile
        return None
    log.warning("batch %s cancelled: its flow run was cancelled in Prefect", batch.id)
    dispatch()
    return batch.id


def submit_batch(batch_id: str) -> str | None:
    """Create the batch's next flow run; None if Prefect is unreachable (it stays Queued)."""
    submission = batches.next_submission(batch_id)
    flow_run_id = orchestrator.create_flow_run(
        batch_id=batch_id,
        tenant_id=submission.tenant_id,
        tier=submission.tier,
        number=submission.number,
    )
    if flow_run_id is not None:
        batches.record_submission(submission, flow_run_id)
    return flow_run_id


def dispatch() -> list[str]:
    """Submit waiting batches while it is their turn and their tier has room; their ids.

    A batch Prefect does not take (it is down) stays waiting for the next dispatch.
    """
    settings = get_settings()
    slots = settings.dispatch_slots or settings.worker_limit
    submitted: list[str] = []
    # Dispatches wait for each other, so two never fill the same slot: on PostgreSQL those
    # of every machine, on SQLite those of this home.
    with exclusive("dispatch"):
        while (
            batch_id := batches.next_to_dispatch(
                slots=slots, vip_reserved=settings.vip_reserved_slots
            )
        ) is not None:
            if submit_batch(batch_id) is None:
                break
            submitted.append(batch_id)
    return submitted
