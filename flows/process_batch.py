"""process-batch: validate and OCR every document of one batch, then summarise it."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger, runtime, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from docpipe import batches, orchestrator, pipeline, webhooks
from docpipe.config import get_settings
from docpipe.dispatch import dispatch
from docpipe.models import Tier
from docpipe.ocr import lower_process_priority
from tasks import deliver_results, process_document, send_webhook, summarize_batch


def _mark_batch_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """The flow itself broke (not a document): the batch ends Failed with the reason."""
    batch_id = flow_run.parameters["batch_id"]
    batches.mark_failed(batch_id, state.message or state.name)
    dispatch()
    webhooks.send_due(batch_id)


@flow(
    name="process-batch",
    on_failure=[_mark_batch_failed],
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().ocr_concurrency),  # type: ignore[arg-type]
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
    with (
        batches.Heartbeat(batch_id),
        orchestrator.ProgressArtifact(batch_id, plan.total, plan.already_done) as progress,
    ):
        runs = process_document.map(ids, labels, unmapped(plan.tier))
        for document_id, state in orchestrator.as_finished(runs, ids):
            if not state.is_completed():
                # Recorded on the document already, unless the task broke before it could.
                pipeline.record_unexpected_failure(document_id, reason=state.message or "unknown")
            progress.advance()
        summary = summarize_batch(batch_id)
    if plan.source == "inbox":
        deliver_results(batch_id, return_state=True)  # the batch is done whatever this does
    dispatch()  # this batch's slot is free: the next one whose turn it is starts now
    if webhooks.is_due(batch_id):  # a task run only for a batch with a webhook
        # After the next batch was handed over; its retries are not this run's to wait for.
        send_webhook(batch_id, return_state=True)
    return orchestrator.finished_state(summary, outcome=summary["outcome"])


if __name__ == "__main__":
    import sys

    process_batch(sys.argv[1])
