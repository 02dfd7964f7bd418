"""The per-document task: validate, then OCR, in one task run."""

from __future__ import annotations

from prefect import State, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled

from docpipe import pipeline
from docpipe.errors import InvalidDocument, OcrFailed, OcrInterrupted
from docpipe.models import Tier


def _interrupted(task: object, task_run: object, state: State) -> bool:
    """Retry only when Tesseract died; a document it cannot read will not read next time."""
    return isinstance(state.data, OcrInterrupted)


@task(
    name="process_document",
    cache_policy=NO_CACHE,
    # The document's file name (shortened, made printable): what a person looks for.
    task_run_name="{label}",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_interrupted,
)
def process_document(document_id: str, label: str, tier: Tier) -> int | State:
    """Deep-check one document, then OCR it; returns its page count.

    One task run per document, not per step: each task run costs the server its state
    events. The document's status still says which step it reached, and a failed run's
    message says why.
    """
    try:
        return pipeline.check_and_ocr(document_id, tier=tier)
    except (OcrInterrupted, OcrFailed, InvalidDocument):
        if pipeline.is_cancelled(document_id):
            # The cancel stopped its reader or its Tesseract, which may say so in any of
            # these: nothing to try again, nor to log as a failure.
            return Cancelled(message="batch was cancelled")
        raise
