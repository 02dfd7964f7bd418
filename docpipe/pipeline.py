"""The per-document step the flow runs: validate, then OCR; each records its outcome."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from docpipe import readers
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.errors import (
    Conflict,
    DocpipeError,
    InvalidDocument,
    NotFound,
    OcrFailed,
    OcrInterrupted,
)
from docpipe.ghostscript import to_pdfa
from docpipe.metrics import count_document_end
from docpipe.models import (
    FINAL_DOCUMENT_STATUSES,
    Batch,
    Document,
    DocumentStatus,
    Output,
    Tenant,
    Tier,
    parse_outputs,
    utcnow,
)
from docpipe.ocr import OcrResult, Straightening, ocr_document, use_scratch
from docpipe.outputs import hocr_document, words_document
from docpipe.storage import get_storage, output_key, text_key
from docpipe.validation import inspect_document, pdf_header_offset

# A cancel may land while a step runs: every write below is a compare-and-set that
# leaves a Cancelled (or Ready) document as it is, never a read-modify-write.
SETTLED = (DocumentStatus.READY, DocumentStatus.CANCELLED)


def _set_unless(
    document_id: str, *, unless: Collection[DocumentStatus] = SETTLED, **values: object
) -> bool:
    """Update the document unless its status is one of `unless`; returns whether it did."""
    with session_scope() as session:
        return _update_unless(session, document_id, unless, values)


def _update_unless(
    session: Session, document_id: str, unless: Collection[DocumentStatus], values: dict[str, Any]
) -> bool:
    result = session.execute(
        update(Document)
        .where(Document.id == document_id, Document.status.not_in(list(unless)))
        .values(**values)
        # A plain UPDATE: no objects of this session to bring up to date in Python.
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _start(document_id: str, status: DocumentStatus) -> Document:
    """Mark the step started and read the document, in one transaction."""
    with session_scope() as session:
        started = {
            "status": status,
            "error": None,
            "started_at": func.coalesce(Document.started_at, utcnow()),
        }
        _update_unless(session, document_id, SETTLED, started)
        document = session.get(Document, document_id)
        if document is None:
            raise NotFound(f"document {document_id} does not exist")
        return document


def _finish(
    document_id: str,
    status: DocumentStatus,
    *,
    tier: Tier,
    page_seconds: Collection[float] = (),
    **fields: object,
) -> None:
    """Record the document's end (unless it is Ready or Cancelled), and count it if it was
    open: a document is counted once each time it ends, not each time its end is written."""
    values = {"status": status, "processed_at": utcnow(), **fields}
    with session_scope() as session:
        if _update_unless(session, document_id, FINAL_DOCUMENT_STATUSES, values):
            count_document_end(session, tier=tier, status=status, page_seconds=list(page_seconds))
        else:
            _update_unless(session, document_id, SETTLED, values)


def check_and_ocr(document_id: str, *, tier: Tier) -> int:
    """Deep-check one document, then OCR it and store its text; returns its page count.

    Raises InvalidDocument or OcrFailed (after recording the reason on the document).
    A document already Ready or Cancelled is left as it is.
    """
    document = _start(document_id, DocumentStatus.VALIDATING)
    if document.status in SETTLED:
        return document.page_count or 0
    settings = get_settings()
    use_scratch(settings.home / "tmp")  # where the reader is handed the file
    storage = get_storage()
    data = storage.read_bytes(document.storage_key)
    try:
        inspection = inspect_document(
            data,
            kind=document.kind,
            max_pages=settings.max_pdf_pages,
            max_pixels=settings.max_image_pixels,
            max_document_pixels=settings.max_document_pixels,
            max_content_bytes=settings.max_pdf_page_content_bytes,
            dpi=settings.ocr_dpi,
            timeout=settings.ocr_page_timeout_seconds,
        )
    except InvalidDocument as e:
        _finish(document_id, DocumentStatus.VALIDATION_FAILED, tier=tier, error=str(e))
        raise
    # Passed validation: now in OCR (unless it was cancelled meanwhile).
    if not _set_unless(
        document_id, page_count=inspection.page_count, status=DocumentStatus.PROCESSING
    ):
        return 0
    outputs = tenant_outputs(document.tenant_id)
    try:
        result = ocr_document(
            data,
            kind=document.kind,
            language=document.language or settings.ocr_language,
            dpi=settings.ocr_dpi,
            page_timeout=settings.ocr_page_timeout_seconds,
            document_timeout=settings.ocr_document_timeout_seconds,
            pdf=Output.PDF in outputs,
            straighten=Straightening(orient=settings.ocr_orient, deskew=settings.ocr_deskew),
            engine=settings.ocr_engine,
            niceness=0 if tier == Tier.VIP else settings.standard_niceness,
            max_page_pixels=settings.max_image_pixels,
            max_pages=settings.max_pdf_pages,
            max_document_pixels=settings.max_document_pixels,
            scratch=settings.home / "tmp",
            slots=settings.ocr_concurrency,
        )
    except InvalidDocument as e:  # a page that does not decode, found as it is read
        _finish(document_id, DocumentStatus.VALIDATION_FAILED, tier=tier, error=str(e))
        raise
    except OcrInterrupted:
        raise  # the task tries again; the flow records the last try's reason
    except OcrFailed as e:
        _finish(document_id, DocumentStatus.OCR_FAILED, tier=tier, error=str(e))
        raise
    try:
        made = _store_outputs(document, data, result, outputs)
    except OcrInterrupted:
        raise  # as above
    except OcrFailed as e:
        _finish(document_id, DocumentStatus.OCR_FAILED, tier=tier, error=str(e))
        raise
    _finish(
        document_id,
        DocumentStatus.READY,
        tier=tier,
        page_seconds=[page.seconds for page in result.pages],
        text_key=text_key(document.storage_key),
        outputs=",".join(made),
        page_count=result.page_count,
        ocr_seconds=result.seconds,
        error=None,
    )
    return result.page_count


def tenant_outputs(tenant_id: str) -> tuple[Output, ...]:
    """The outputs made for a tenant's documents: its own choice, or the settings'."""
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        chosen = tenant.outputs if tenant is not None else None
    return parse_outputs(chosen or get_settings().ocr_outputs)


def _store_outputs(
    document: Document, data: bytes, result: OcrResult, outputs: tuple[Output, ...]
) -> list[Output]:
    """Write each output beside the original; the document lists them once all are there."""
    made: dict[Output, bytes] = {Output.TEXT: result.text.encode()}
    if Output.PDF in outputs:
        settings = get_settings()
        original = data[pdf_header_offset(data) or 0 :] if document.kind == "pdf" else data
        # The tenant's file is parsed again, so by the reader (docpipe.readers).
        made[Output.PDF] = readers.searchable(
            original,
            kind=document.kind,
            pages=result.pages,
            timeout=settings.ocr_page_timeout_seconds,
        )
        if settings.pdfa:
            made[Output.PDF] = to_pdfa(made[Output.PDF], timeout=settings.ocr_page_timeout_seconds)
    if Output.HOCR in outputs:
        made[Output.HOCR] = hocr_document(result.pages).encode()
    if Output.WORDS in outputs:
        made[Output.WORDS] = json.dumps(words_document(result.pages)).encode()
    storage = get_storage()
    for output, content in made.items():
        storage.put_bytes(content, output_key(document.storage_key, output))
    return list(made)


def is_cancelled(document_id: str) -> bool:
    with session_scope() as session:
        status = session.scalar(select(Document.status).where(Document.id == document_id))
    return status == DocumentStatus.CANCELLED


def record_unexpected_failure(document_id: str, *, error: object, reason: str | None) -> None:
    """The document's task run failed without recording why (a Tesseract that died on every
    try, or a step that broke for a reason of its own): end the document anyway, with
    docpipe's own error as it is, or Prefect's `reason` for anything else.

    It failed validation if it never got past it, else OCR.
    """
    if isinstance(error, DocpipeError):
        said = str(error)
    else:
        said = f"processing broke: {reason or 'unknown'}"
    values = {
        "status": case(
            (
                Document.status.in_([DocumentStatus.UPLOADED, DocumentStatus.VALIDATING]),
                DocumentStatus.VALIDATION_FAILED,
            ),
            else_=DocumentStatus.OCR_FAILED,
        ),
        "error": said[:2000],
        "processed_at": utcnow(),
    }
    with session_scope() as session:
        if _update_unless(session, document_id, FINAL_DOCUMENT_STATUSES, values):
            status, tier = session.execute(
                select(Document.status, Batch.tier)
                .join(Batch, Document.batch_id == Batch.id)
                .where(Document.id == document_id)
            ).one()
            count_document_end(session, tier=tier, status=status)


def read_text(document: Document) -> str:
    return read_output(document, Output.TEXT).decode()


def read_output(document: Document, output: Output) -> bytes:
    """One of a Ready document's outputs; Conflict until it is Ready."""
    if document.status != DocumentStatus.READY:
        raise Conflict(f"document is {document.status.value}, not Ready")
    made = document.made_outputs()
    if output not in made:
        raise NotFound(
            f"this document has no {output.value} output; it has "
            + ", ".join(o.value for o in made)
            + " (its tenant's outputs setting chooses them)"
        )
    return get_storage().read_bytes(output_key(document.storage_key, output))


def read_original(document: Document) -> bytes:
    """The bytes as they were uploaded."""
    return get_storage().read_bytes(document.storage_key)
