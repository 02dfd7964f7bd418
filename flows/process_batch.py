"""process-batch: validate and OCR every document of one batch, then summarise it."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from prefect import State, flow, get_run_logger, runtime, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from docpipe import batches, orchestrator, parts, pipeline, webhooks
from docpipe.config import get_settings
from docpipe.dispatch import dispatch
from docpipe.models import Tier
from docpipe.ocr import lower_process_priority
from flows.process_batch_part import work_through
from tasks import deliver_results, process_document, send_webhook, summarize_batch

# How often the batch's own run looks at a shared batch once it has nothing to take.
SHARED_POLL_SECONDS = 1.0


def _mark_batch_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """The flow itself broke (not a document): the batch ends Failed with the reason."""
    batch_id = flow_run.parameters["batch_id"]
    batches.mark_failed(batch_id, state.message or state.name, flow_run_id=str(flow_run.id))
    dispatch()
    webhooks.send_due(batch_id)


@flow(
    name="process-batch",
    on_failure=[_mark_batch_failed],
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().documents_in_flight),  # type: ignore[arg-type]
    log_prints=False,
)
def process_batch(batch_id: str) -> dict[str, Any] | State:
    """Validate and OCR a batch's documents in parallel; one failure never stops the rest.

    Args:
        batch_id: The batch to process: the `batchId` an upload answered with (also in
            `GET /api/batches?tenantId=...`, in `docpipe ingest`'s output, and in the name
            of the batch's earlier runs, batch-<batchId>). Documents already Ready are
            skipped; a batch that was cancelled or has nothing left to do is not run.
    """
    logger = get_run_logger()
    orchestrator.quiet_task_completions()
    flow_run_id = str(runtime.flow_run.id)
    plan = batches.begin_processing(batch_id, flow_run_id=flow_run_id)
    if plan.refusal is not None:
        # Whoever started this run (the UI, Python, a re-run), it changes nothing.
        logger.warning("Not run: %s", plan.refusal)
        return orchestrator.not_run(f"Not run: {plan.refusal}")
    if not orchestrator.is_labelled(runtime.flow_run.tags):  # started outside docpipe
        orchestrator.label_flow_run(
            flow_run_id,
            name=orchestrator.run_name(batch_id, plan.run_number),
            tags=orchestrator.run_tags(plan.tenant_id, plan.tier),
        )
    logger.info(
        "Batch %s: %d documents, %d still to do, tier %s",
        batch_id, plan.total, len(plan.pending), plan.tier.value,
    )  # fmt: skip
    if plan.tier != Tier.VIP:
        lower_process_priority(get_settings().standard_niceness)
    ids, labels = [d for d, _ in plan.pending], [label for _, label in plan.pending]
    helpers = parts.open_round(batch_id, ids)
    beat = partial(_beat_for_both, run_id=flow_run_id) if helpers else batches.heartbeat
    with (
        batches.Heartbeat(batch_id, beat=beat),
        orchestrator.ProgressArtifact(batch_id, plan.total, plan.already_done) as progress,
    ):
        if helpers:
            _share(plan, flow_run_id, helpers, progress)
        else:
            runs = process_document.map(ids, labels, unmapped(plan.tier))
            for document_id, state in orchestrator.as_finished(runs, ids):
                if not state.is_completed():
                    # Recorded on the document already, unless the task broke before it could.
                    pipeline.record_unexpected_failure(
                        document_id, error=orchestrator.failure_of(state), reason=state.message
                    )
                progress.advance()
        summary = summarize_batch(batch_id)
    if plan.source == "inbox":
        deliver_results(batch_id, return_state=True)  # the batch is done whatever this does
    dispatch()  # this batch's slot is free: the next one whose turn it is starts now
    if webhooks.is_due(batch_id):  # a task run only for a batch with a webhook
        # After the next batch was handed over; its retries are not this run's to wait for.
        send_webhook(batch_id, return_state=True)
    return orchestrator.finished_state(summary, outcome=summary["outcome"])


def _share(
    plan: batches.BatchPlan, run_id: str, helpers: int, progress: orchestrator.ProgressArtifact
) -> None:
    """Share a big batch out: start helper runs any worker may take, work on it here too,
    and return once every document is done, whoever did it (docpipe/parts.py)."""
    logger = get_run_logger()
    started = orchestrator.start_helper_runs(
        batch_id=plan.batch_id,
        tenant_id=plan.tenant_id,
        tier=plan.tier,
        number=plan.run_number,
        count=helpers,
    )
    logger.info("Batch %s shared with %d helper runs", plan.batch_id, len(started))

    def count_done() -> None:
        progress.set(plan.total - parts.round_state(plan.batch_id).open)

    while True:
        work_through(plan.batch_id, run_id, plan.tier, on_each=count_done)
        state = parts.round_state(plan.batch_id)
        progress.set(plan.total - state.open)
        if not state.open:
            break
        if not state.takeable:
            time.sleep(SHARED_POLL_SECONDS)  # the helpers are at it
    # Helpers no worker took yet have nothing left to do.
    orchestrator.stop_helper_runs(plan.batch_id, "the batch finished without it", running=False)


def _beat_for_both(batch_id: str, *, run_id: str) -> None:
    """The batch's own run is alive, and holds the documents it took."""
    batches.heartbeat(batch_id)
    parts.beat(batch_id, run_id)


if __name__ == "__main__":
    import sys

    process_batch(sys.argv[1])
