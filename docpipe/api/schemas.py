"""The API's JSON shapes (camelCase on the wire), read straight from the ORM objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from pydantic.alias_generators import to_camel

from docpipe.models import BatchStatus, DeliveryState, DocumentStatus, Outcomes, Output


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


BATCH_ID = "0b5c4c0e-6f1a-4d55-9d0c-2f1c1d1e8a10"
DOCUMENT_ID = "5d0f6a5e-3b8e-4c1e-8f64-7a1e9b0c2d33"
WHEN = "2025-01-31T09:30:00Z"


def _id(what: str, example: str) -> Any:
    return Field(description=f"The {what}'s id.", examples=[example])


class InvalidFile(Schema):
    file_name: str = Field(description="The file's name as uploaded.", examples=["scan-07.pdf"])
    reason: str = Field(
        description="Why it was refused.",
        examples=["not a PDF, PNG, JPEG or TIFF (judged by the file's content)"],
    )


class ErrorBody(Schema):
    """Every 4xx and 503 answer: what was wrong, in words; for an upload, every bad file."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "1 invalid file; nothing was stored",
                    "invalidFiles": [{"fileName": "notes.pdf", "reason": "file is empty"}],
                }
            ]
        }
    )

    error: str = Field(
        description="What was wrong, for a person to read.", examples=["batch not found"]
    )
    invalid_files: list[InvalidFile] | None = Field(
        None, description="On a refused upload: each bad file and why (nothing was stored)."
    )


STATUS_URL = Field(
    description="Where the batch's status is read (GET).",
    examples=[f"/api/batches/{BATCH_ID}"],
)


class BatchAccepted(Schema):
    batch_id: str = _id("batch", BATCH_ID)
    document_ids: list[str] = Field(
        description="The documents' ids, in upload order.", examples=[[DOCUMENT_ID]]
    )
    status: BatchStatus = Field(
        description="Queued: handed to Prefect, or waiting for its turn.", examples=["Queued"]
    )
    status_url: str = STATUS_URL


class DocumentAccepted(Schema):
    document_id: str = _id("document", DOCUMENT_ID)
    batch_id: str = Field(description="The batch of one it is in.", examples=[BATCH_ID])
    status: BatchStatus = Field(description="The batch's status.", examples=["Queued"])
    status_url: str = STATUS_URL


class DocumentInBatch(Schema):
    id: str = _id("document", DOCUMENT_ID)
    file_name: str = Field(description="The name it was uploaded under.", examples=["invoice.pdf"])
    status: DocumentStatus = Field(
        description="Ready, ValidationFailed, OcrFailed and Cancelled are end states.",
        examples=["Ready"],
    )
    processed_at: datetime | None = Field(
        description="When it reached its end state.", examples=[WHEN]
    )
    error: str | None = Field(
        description="Why it failed, for a failed document.",
        examples=["PDF is encrypted"],
    )


class _Counted(Schema):
    """A batch's counts of its documents' outcomes.

    completedDocuments = successCount + failureCount + cancelledCount: a cancelled
    document has an end state but neither succeeded nor failed.
    """

    @property
    def _outcomes(self) -> Outcomes:
        raise NotImplementedError

    @computed_field(description="Documents in the batch.", examples=[10])  # type: ignore[prop-decorator]
    @property
    def total_documents(self) -> int:
        return self._outcomes.total

    @computed_field(  # type: ignore[prop-decorator]
        description="Documents at an end state: successCount + failureCount + cancelledCount.",
        examples=[10],
    )
    @property
    def completed_documents(self) -> int:
        return self._outcomes.finished

    @computed_field(description="Documents Ready.", examples=[8])  # type: ignore[prop-decorator]
    @property
    def success_count(self) -> int:
        return self._outcomes.succeeded

    @computed_field(  # type: ignore[prop-decorator]
        description="Documents that failed validation or OCR.", examples=[2]
    )
    @property
    def failure_count(self) -> int:
        return self._outcomes.failed

    @computed_field(description="Documents Cancelled.", examples=[0])  # type: ignore[prop-decorator]
    @property
    def cancelled_count(self) -> int:
        return self._outcomes.cancelled


class WebhookView(Schema):
    """The delivery of the batch's latest end to its webhook."""

    delivery_id: str = Field(
        description="Its X-Docpipe-Delivery: the same for every attempt.",
        examples=["4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f.batch.completed.1"],
    )
    event: str = Field(
        description="batch.completed, batch.cancelled or batch.failed", examples=["batch.completed"]
    )
    url: str = Field(description="Where it is sent.", examples=["https://example.com/hook"])
    state: DeliveryState = Field(
        description="pending, delivered, or failed (attempts used up)", examples=["delivered"]
    )
    attempts: int = Field(description="Attempts made so far.", examples=[3])
    last_status: int | None = Field(
        description="The receiver's HTTP status at the last attempt.", examples=[200]
    )
    last_error: str | None = Field(
        description="Why the last attempt failed, if it did.", examples=[None]
    )
    delivered_at: datetime | None = Field(
        description="When the receiver accepted it.", examples=[WHEN]
    )
    next_attempt_at: datetime | None = Field(
        description="When the next attempt is due, while pending.", examples=[None]
    )


BATCH_STATUS = Field(
    description="Queued, Processing, then Completed, Cancelled or Failed (the flow itself broke).",
    examples=["Completed"],
)
CREATED_AT = Field(description="When the upload was accepted.", examples=[WHEN])
COMPLETED_AT = Field(description="When it reached an end state.", examples=[WHEN])


class BatchView(_Counted):
    id: str = _id("batch", BATCH_ID)
    tenant_id: str = Field(description="The tenant it belongs to.", examples=["acme"])
    status: BatchStatus = BATCH_STATUS
    created_at: datetime = CREATED_AT
    completed_at: datetime | None = COMPLETED_AT
    flow_run_id: str | None = Field(
        description="Its Prefect flow run (open it in the Prefect UI).",
        examples=["8a3f9e57-2b1d-4a8c-9f0e-6d5c4b3a2918"],
    )
    error: str | None = Field(
        description="Why the batch Failed, if it did.", examples=["the flow run crashed"]
    )
    webhook: WebhookView | None = Field(
        description="Its end's webhook delivery; null until it ends, or with no webhook."
    )
    documents: list[DocumentInBatch] = Field(description="Its documents, in upload order.")

    @property
    def _outcomes(self) -> Outcomes:
        """From its documents' statuses as they are now."""
        return Outcomes.of(d.status for d in self.documents)


class BatchSummaryView(_Counted):
    """A batch in a page of batches: its counts, without its documents."""

    id: str = _id("batch", BATCH_ID)
    status: BatchStatus = BATCH_STATUS
    created_at: datetime = CREATED_AT
    completed_at: datetime | None = COMPLETED_AT
    outcomes: Outcomes = Field(exclude=True)

    @property
    def _outcomes(self) -> Outcomes:
        return self.outcomes

    @computed_field(  # type: ignore[prop-decorator]
        description="Where its documents' statuses are read.", examples=[f"/api/batches/{BATCH_ID}"]
    )
    @property
    def status_url(self) -> str:
        return f"/api/batches/{self.id}"


class BatchPage(Schema):
    items: list[BatchSummaryView] = Field(description="The tenant's batches, newest first.")
    total: int = Field(description="How many batches the tenant has in all.", examples=[42])
    limit: int = Field(description="At most this many items (as asked).", examples=[20])
    offset: int = Field(description="Items skipped before the first (as asked).", examples=[0])


class DocumentView(Schema):
    id: str = _id("document", DOCUMENT_ID)
    language: str | None = Field(
        description="Tesseract's languages it is read in (deu+eng).", examples=["deu+eng"]
    )
    batch_id: str = Field(description="The batch it came in.", examples=[BATCH_ID])
    tenant_id: str = Field(description="The tenant it belongs to.", examples=["acme"])
    file_name: str = Field(description="The name it was uploaded under.", examples=["invoice.pdf"])
    kind: str = Field(description="pdf, png, jpeg or tiff, judged by its bytes.", examples=["pdf"])
    size_bytes: int = Field(description="Its size as uploaded.", examples=[48213])
    sha256: str = Field(
        description="SHA-256 of its bytes, hex.",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )
    status: DocumentStatus = Field(
        description="Uploaded, Validating, Processing, then Ready, ValidationFailed, OcrFailed "
        "or Cancelled.",
        examples=["Ready"],
    )
    error: str | None = Field(
        description="Why it failed, for a failed document.",
        examples=["PDF has 250 pages; the limit is 100"],
    )
    page_count: int | None = Field(description="Pages, once validated.", examples=[3])
    created_at: datetime = CREATED_AT
    processed_at: datetime | None = Field(
        description="When it reached its end state.", examples=[WHEN]
    )
    ocr_seconds: float | None = Field(
        description="Seconds its OCR took, once Ready.", examples=[2.41]
    )

    outputs: list[Output] = Field(
        validation_alias="made_outputs",
        description="The outputs it has, each at /api/documents/{id}/<output>; empty until Ready.",
        examples=[["text", "pdf"]],
    )

    @field_validator("outputs", mode="before")
    @classmethod
    def _call(cls, value: object) -> object:
        return value() if callable(value) else value

    @computed_field(  # type: ignore[prop-decorator]
        description="Where its OCR text is read.",
        examples=[f"/api/documents/{DOCUMENT_ID}/text"],
    )
    @property
    def text_url(self) -> str:
        return f"/api/documents/{self.id}/text"


class Word(Schema):
    text: str = Field(description="The word as read.", examples=["Invoice"])
    bbox: list[int] = Field(
        description="left, top, right, bottom, in pixels of the page as read",
        examples=[[312, 140, 498, 188]],
    )
    confidence: float = Field(description="Tesseract's confidence, 0-100", examples=[96.5])


class PageWords(Schema):
    page: int = Field(description="1 for the first page", examples=[1])
    width: int = Field(
        description="pixels of the page as read (upright, straightened)", examples=[2480]
    )
    height: int = Field(description="pixels of the page as read", examples=[3508])
    dpi: int = Field(description="the resolution it was read at", examples=[300])
    rotation: int = Field(
        description="degrees clockwise the page was turned to stand upright", examples=[0]
    )
    skew: float = Field(
        description="degrees its lines rose, straightened before reading", examples=[0.0]
    )
    words: list[Word] = Field(description="The page's words in reading order.")


class WordsView(Schema):
    pages: list[PageWords] = Field(description="Every page, first to last.")


class Languages(Schema):
    installed: list[str] = Field(
        description="Tesseract's language codes that can be asked for",
        examples=[["deu", "eng", "fra"]],
    )
    default: str = Field(
        description="The languages this tenant's uploads are read in by default",
        examples=["eng"],
    )


class Limits(Schema):
    """What an upload may hold, so a client can name a file too large before sending it."""

    max_file_bytes: int = Field(
        description="Bytes one file may have (DOCPIPE_MAX_FILE_BYTES)", examples=[26214400]
    )
    max_batch_documents: int = Field(
        description="Files one upload may hold (DOCPIPE_MAX_BATCH_DOCUMENTS)", examples=[100]
    )
    max_request_bytes: int = Field(
        description="Bytes one upload's whole body may have", examples=[2634022912]
    )


class Health(Schema):
    status: str = Field(description="ok, or degraded if a part does not answer", examples=["ok"])
    database: bool = Field(description="Whether docpipe's database answers.", examples=[True])
    storage: bool = Field(description="Whether document storage answers.", examples=[True])
    prefect: bool = Field(description="Whether the Prefect server answers.", examples=[True])


ANSWERS = {
    400: "The request is malformed; `error` says how.",
    401: "No API key, or one that matches no tenant.",
    403: "tenantId names another tenant than the key's.",
    404: "No such thing, or it belongs to another tenant.",
    409: "It does not fit the thing's state now; `error` says which.",
    413: "Too large: the body, or a file over the size limit (named in invalidFiles).",
    429: "The tenant is over one of its limits; try again after Retry-After seconds.",
    503: "No room now, or the database or storage is down; try again after Retry-After.",
}


def error_answers(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these codes, each with the `{"error"}` body; `described`
    (`_409="..."`) says what a code means on this route."""
    return {
        code: {"model": ErrorBody, "description": described.get(f"_{code}", ANSWERS[code])}
        for code in codes
    }
