"""Per-document tasks: validate, then OCR."""

from __future__ import annotations

from prefect import State, task
from prefect.cache_policies import NO_CACHE

from docpipe import pipeline
from docpipe.errors import OcrInterrupted
from docpipe.models import Tier


@task(name="validate_document", cache_policy=NO_CACHE, task_run_name="validate-{document_id}")
def validate_document(document_id: str) -> str | None:
    """Deep-check one document; fails (with the reason) if it cannot be OCR'd.

    Returns the id to OCR, or None when there is nothing to do (Ready or Cancelled).
    """
    return document_id if pipeline.validate_document(document_id) else None


def _interrupted(task: object, task_run: object, state: State) -> bool:
    """Retry OCR only when Tesseract died; a document it cannot read will not read next time."""
    return isinstance(state.data, OcrInterrupted)


@task(
    name="ocr_document",
    cache_policy=NO_CACHE,
    task_run_name="ocr-{document_id}",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_interrupted,
)
def ocr_document(document_id: str, tier: Tier) -> int:
    """OCR one validated document with Tesseract; returns its page count."""
    return pipeline.ocr_stored_document(document_id, tier=tier)
