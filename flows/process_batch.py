"""process-batch: validate and OCR every document of one batch, then summarise it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any
from uuid import UUID

from prefect import State, flow, get_run_logger, runtime, unmapped
from prefect.artifacts import create_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from docpipe import batches, pipeline
from docpipe.config import get_settings
from docpipe.dispatch import dispatch
from docpipe.models import Tier
from docpipe.ocr import lower_process_priority
from tasks import process_document, summarize_batch


class Progress:
    """The batch's progress artifact (key batch-<id>): the Prefect UI shows X of Y.

    Updated at most every two seconds (and at the end): every update is an API call and a
    database write for the server, and a person watching the UI sees no difference.
    """

    MIN_INTERVAL = 2.0

    def __init__(self, batch_id: str, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.client = get_client(sync_client=True)
        self.client.__enter__()
        self.artifact_id: UUID = create_progress_artifact(  # type: ignore[assignment]
            progress=self._percent(), key=f"batch-{batch_id}", description=self._text()
        )
        self.sent_at = time.monotonic()

    def advance(self) -> None:
        self.done += 1
        if self.done >= self.total or time.monotonic() - self.sent_at >= self.MIN_INTERVAL:
            self.send()

    def send(self) -> None:
        self.client.update_artifact(
            self.artifact_id,
            ArtifactUpdate(data=self._percent(), description=self._text()),
        )
        self.sent_at = time.monotonic()

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def _percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def _text(self) -> str:
        return f"{self.done} of {self.total} documents finished"


class QuietCompletions(logging.Filter):
    """Leaves out each task run's "Finished in state Completed()" line.

    A 100-document batch logged 100 of them, which the task runs' states already say. Each
    line costs the flow run, the worker (which copies its output) and the Prefect server
    (which stores it): without them, three 100-page batches took 36.5-40.7 ms of stack CPU
    per document, against 38.0-47.7 with. A task run that fails, retries or logs anything
    else still says so.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and isinstance(record.msg, str)
            and record.msg.startswith("Finished in state Completed")
        )


QUIET_COMPLETIONS = QuietCompletions()


def _mark_batch_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """The flow itself broke (not a document): the batch ends Failed with the reason."""
    batches.mark_failed(flow_run.parameters["batch_id"], state.message or state.name)
    dispatch()


class Heartbeat:
    """Tells recovery this run is alive, every few seconds, until the run ends."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="batch-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        interval = get_settings().heartbeat_seconds
        while not self.stopped.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is not worth failing a batch
                batches.heartbeat(self.batch_id)


@flow(
    name="process-batch",
    on_failure=[_mark_batch_failed],
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().ocr_concurrency),  # type: ignore[arg-type]
    log_prints=False,
)
def process_batch(batch_id: str) -> dict[str, Any] | State:
    """Validate and OCR a batch's documents in parallel; one failure never stops the rest.

    Args:
        batch_id: The id of the batch to process, as returned by the upload API.
    """
    logger = get_run_logger()
    logging.getLogger("prefect.task_runs").addFilter(QUIET_COMPLETIONS)
    plan = batches.begin_processing(batch_id, flow_run_id=runtime.flow_run.id)
    if plan.refusal is not None:
        # Whoever started this run (the UI, Python, a re-run), it changes nothing.
        logger.warning("Not run: %s", plan.refusal)
        return Cancelled(message=f"Not run: {plan.refusal}")
    logger.info(
        "Batch %s: %d documents, %d still to do, tier %s",
        batch_id,
        plan.total,
        len(plan.pending_document_ids),
        plan.tier.value,
    )
    if plan.tier != Tier.VIP:
        lower_process_priority(get_settings().standard_niceness)
    with Heartbeat(batch_id):
        progress = Progress(batch_id, plan.total, plan.already_done)
        try:
            _process_documents(plan, progress)
        finally:
            progress.close()
        summary = summarize_batch(batch_id)
    dispatch()  # this batch's slot is free: the next one whose turn it is starts now
    return summary


def _process_documents(plan: batches.BatchPlan, progress: Progress) -> None:
    """One task run per pending document, as many at once as the task runner allows."""
    runs = process_document.map(plan.pending_document_ids, unmapped(plan.tier))
    document_of = dict(zip((f.task_run_id for f in runs), plan.pending_document_ids, strict=True))
    for run in as_completed(list(runs)):
        if not _final_state(run).is_completed():
            # The reason is on the document already, unless the task broke before it could
            # record one (a crash, a bug): then the document ends failed here.
            pipeline.record_unexpected_failure(
                document_of[run.task_run_id], reason=run.state.message or "unknown"
            )
        progress.advance()


def _final_state(future: PrefectFuture[Any]) -> State:
    """The task's own final state (not the API's view, which may lag behind)."""
    future.wait()
    return future.state


if __name__ == "__main__":
    import sys

    process_batch(sys.argv[1])
