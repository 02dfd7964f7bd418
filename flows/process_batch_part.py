"""process-batch-part: help a big batch's own flow run, on whichever worker takes it."""

from __future__ import annotations

import queue
from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import State, flow, get_run_logger, runtime
from prefect.futures import PrefectFuture
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from docpipe import batches, orchestrator, parts, pipeline
from docpipe.config import get_settings
from docpipe.models import Tier
from docpipe.ocr import lower_process_priority
from tasks import process_document


def work_through(
    batch_id: str, run_id: str, tier: Tier, on_each: Callable[[], None] = lambda: None
) -> int:
    """Take the batch's documents one at a time, ocr_concurrency of them in hand, until no
    run's is left to take; how many this run did. `on_each` runs as each one ends.

    Not one more, as an unshared run holds: the runs' claims share the batch out, and a
    first run claiming an extra long PDF before its helpers start would do it alone."""
    finished: queue.Queue[PrefectFuture[Any]] = queue.Queue()
    in_hand: dict[PrefectFuture[Any], str] = {}
    slots, taken, dead = get_settings().ocr_concurrency, 0, set()
    while True:
        while len(in_hand) < slots and (claim := parts.claim_next(batch_id, run_id)):
            if claim.took_from and claim.took_from not in dead:
                # Its worker died (or it hung): the UI should not show it Running for ever.
                dead.add(claim.took_from)
                orchestrator.mark_crashed(claim.took_from, "stopped beating; others took over")
            label = batches.task_label(claim.file_name)
            future = process_document.submit(claim.document_id, label, tier)
            future.add_done_callback(finished.put)
            in_hand[future] = claim.document_id
            taken += 1
        if not in_hand:
            return taken
        future = finished.get()
        future.wait()  # the task's own final state, not the API's view, which may lag
        document_id = in_hand.pop(future)
        if not future.state.is_completed():
            # Recorded on the document already, unless the task broke before it could.
            state = future.state
            error = orchestrator.failure_of(state)
            pipeline.record_unexpected_failure(document_id, error=error, reason=state.message)
        parts.release(document_id, run_id)
        on_each()


@flow(
    name="process-batch-part",
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().ocr_concurrency),  # type: ignore[arg-type]
    log_prints=False,
)
def process_batch_part(batch_id: str) -> State:
    """Take documents of a big batch that its own flow run shares out, until none is left.

    The batch's own run (process-batch) starts these on the batch's tier queue when the
    batch has more than DOCPIPE_SPLIT_PAGES pages; each does what it can and ends. Started
    by hand for a batch not being processed, it does nothing.

    Args:
        batch_id: The batch to help with.
    """
    logger = get_run_logger()
    orchestrator.quiet_task_completions()
    tier, refusal = parts.join(batch_id)
    if tier is None:
        logger.info("Not run: %s", refusal)
        return orchestrator.not_run(f"Not run: {refusal}")
    if tier != Tier.VIP:
        lower_process_priority(get_settings().standard_niceness)
    run_id = str(runtime.flow_run.id)
    with batches.Heartbeat(batch_id, beat=partial(parts.beat, run_id=run_id)):
        taken = work_through(batch_id, run_id, tier)
    logger.info("Batch %s: this run did %d documents", batch_id, taken)
    return Completed(message=f"did {taken} documents of batch {batch_id}")
