"""The per-document steps the flow runs: validate, then OCR; each records its outcome."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, update

from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.errors import InvalidDocument, NotFound, OcrFailed
from docpipe.models import FINAL_DOCUMENT_STATUSES, Document, DocumentStatus, Tier, utcnow
from docpipe.ocr import ocr_document
from docpipe.storage import get_storage, text_key
from docpipe.validation import inspect_document

# A cancel may land while a step runs: every write below is a compare-and-set that
# leaves a Cancelled (or Ready) document as it is, never a read-modify-write.
SETTLED = (DocumentStatus.READY, DocumentStatus.CANCELLED)


def _set_unless(
    document_id: str, *, unless: Collection[DocumentStatus] = SETTLED, **values: object
) -> bool:
    """Update the document unless its status is one of `unless`; returns whether it did."""
    with session_scope() as session:
        result = session.execute(
            update(Document)
            .where(Document.id == document_id, Document.status.not_in(list(unless)))
            .values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _start(document_id: str, status: DocumentStatus) -> Document:
    _set_unless(
        document_id,
        status=status,
        error=None,
        started_at=func.coalesce(Document.started_at, utcnow()),
    )
    with session_scope() as session:
        document = session.get(Document, document_id)
        if document is None:
            raise NotFound(f"document {document_id} does not exist")
        return document


def _finish(document_id: str, status: DocumentStatus, **fields: object) -> None:
    _set_unless(document_id, unless=SETTLED, status=status, processed_at=utcnow(), **fields)


def validate_document(document_id: str) -> bool:
    """Deep-check one document; returns whether it should go on to OCR."""
    document = _start(document_id, DocumentStatus.VALIDATING)
    if document.status in (DocumentStatus.READY, DocumentStatus.CANCELLED):
        return False
    settings = get_settings()
    try:
        data = get_storage().read_bytes(document.storage_key)
        inspection = inspect_document(
            data,
            kind=document.kind,
            max_pages=settings.max_pdf_pages,
            max_pixels=settings.max_image_pixels,
        )
    except InvalidDocument as e:
        _finish(document_id, DocumentStatus.VALIDATION_FAILED, error=str(e))
        raise
    # Passed validation: now waiting for, or in, OCR.
    return _set_unless(
        document_id, page_count=inspection.page_count, status=DocumentStatus.PROCESSING
    )


def ocr_stored_document(document_id: str, *, tier: Tier) -> int:
    """OCR one validated document and store its text beside it; returns its page count."""
    document = _start(document_id, DocumentStatus.PROCESSING)
    if document.status in (DocumentStatus.READY, DocumentStatus.CANCELLED):
        return document.page_count or 0
    settings = get_settings()
    storage = get_storage()
    try:
        result = ocr_document(
            storage.read_bytes(document.storage_key),
            kind=document.kind,
            language=settings.ocr_language,
            dpi=settings.ocr_dpi,
            page_timeout=settings.ocr_page_timeout_seconds,
            niceness=0 if tier == Tier.VIP else settings.standard_niceness,
        )
    except OcrFailed as e:
        _finish(document_id, DocumentStatus.OCR_FAILED, error=str(e))
        raise
    key = text_key(document.storage_key)
    storage.put_bytes(result.text.encode(), key)
    _finish(
        document_id,
        DocumentStatus.READY,
        text_key=key,
        page_count=result.pages,
        ocr_seconds=result.seconds,
        error=None,
    )
    return result.pages


def record_unexpected_failure(document_id: str, *, during: str, reason: str) -> None:
    """A step broke for a reason of its own (not the document's): end the document anyway."""
    status = (
        DocumentStatus.VALIDATION_FAILED if during == "validation" else DocumentStatus.OCR_FAILED
    )
    _set_unless(
        document_id,
        unless=FINAL_DOCUMENT_STATUSES,
        status=status,
        error=f"{during} broke: {reason}"[:2000],
        processed_at=utcnow(),
    )


def read_text(document: Document) -> str:
    if document.text_key is None:
        raise NotFound("document has no text")
    return get_storage().read_bytes(document.text_key).decode()
