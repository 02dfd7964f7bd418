"""The API's JSON shapes (camelCase on the wire), read straight from the ORM objects."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from pydantic.alias_generators import to_camel

from docpipe.models import BatchStatus, DeliveryState, DocumentStatus, Outcomes, Output


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class InvalidFile(Schema):
    file_name: str
    reason: str


class ErrorBody(Schema):
    error: str
    invalid_files: list[InvalidFile] | None = None


class BatchAccepted(Schema):
    batch_id: str
    document_ids: list[str]
    status: BatchStatus
    status_url: str


class DocumentAccepted(Schema):
    document_id: str
    batch_id: str
    status: BatchStatus
    status_url: str


class DocumentInBatch(Schema):
    id: str
    file_name: str
    status: DocumentStatus
    processed_at: datetime | None
    error: str | None


class _Counted(Schema):
    """A batch's counts of its documents' outcomes.

    completedDocuments = successCount + failureCount + cancelledCount: a cancelled
    document has an end state but neither succeeded nor failed.
    """

    @property
    def _outcomes(self) -> Outcomes:
        raise NotImplementedError

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_documents(self) -> int:
        return self._outcomes.total

    @computed_field  # type: ignore[prop-decorator]
    @property
    def completed_documents(self) -> int:
        return self._outcomes.finished

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_count(self) -> int:
        return self._outcomes.succeeded

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failure_count(self) -> int:
        return self._outcomes.failed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cancelled_count(self) -> int:
        return self._outcomes.cancelled


class WebhookView(Schema):
    """The delivery of the batch's latest end to its webhook."""

    delivery_id: str = Field(description="Its X-Docpipe-Delivery: the same for every attempt.")
    event: str = Field(description="batch.completed, batch.cancelled or batch.failed")
    url: str
    state: DeliveryState = Field(description="pending, delivered, or failed (attempts used up)")
    attempts: int
    last_status: int | None = Field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class BatchView(_Counted):
    id: str
    tenant_id: str
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    flow_run_id: str | None
    error: str | None
    webhook: WebhookView | None = Field(
        description="Its end's webhook delivery; null until it ends, or with no webhook."
    )
    documents: list[DocumentInBatch]

    @property
    def _outcomes(self) -> Outcomes:
        """From its documents' statuses as they are now."""
        return Outcomes.of(d.status for d in self.documents)


class BatchSummaryView(_Counted):
    """A batch in a page of batches: its counts, without its documents."""

    id: str
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    outcomes: Outcomes = Field(exclude=True)

    @property
    def _outcomes(self) -> Outcomes:
        return self.outcomes

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status_url(self) -> str:
        return f"/api/batches/{self.id}"


class BatchPage(Schema):
    items: list[BatchSummaryView]
    total: int
    limit: int
    offset: int


class DocumentView(Schema):
    id: str
    language: str | None = Field(description="Tesseract's languages it is read in (deu+eng).")
    batch_id: str
    tenant_id: str
    file_name: str
    kind: str
    size_bytes: int
    sha256: str
    status: DocumentStatus
    error: str | None
    page_count: int | None
    created_at: datetime
    processed_at: datetime | None
    ocr_seconds: float | None

    outputs: list[Output] = Field(
        validation_alias="made_outputs",
        description="The outputs it has, each at /api/documents/{id}/<output>; empty until Ready.",
    )

    @field_validator("outputs", mode="before")
    @classmethod
    def _call(cls, value: object) -> object:
        return value() if callable(value) else value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text_url(self) -> str:
        return f"/api/documents/{self.id}/text"


class Word(Schema):
    text: str
    bbox: list[int] = Field(description="left, top, right, bottom, in pixels of the page as read")
    confidence: float = Field(description="Tesseract's confidence, 0-100")


class PageWords(Schema):
    page: int = Field(description="1 for the first page")
    width: int = Field(description="pixels of the page as read (upright, straightened)")
    height: int
    dpi: int
    rotation: int = Field(description="degrees clockwise the page was turned to stand upright")
    skew: float = Field(description="degrees its lines rose, straightened before reading")
    words: list[Word]


class WordsView(Schema):
    pages: list[PageWords]


class Languages(Schema):
    installed: list[str] = Field(description="Tesseract's language codes that can be asked for")
    default: str = Field(description="The languages this tenant's uploads are read in by default")


class Limits(Schema):
    """What an upload may hold, so a client can name a file too large before sending it."""

    max_file_bytes: int = Field(description="Bytes one file may have (DOCPIPE_MAX_FILE_BYTES)")
    max_batch_documents: int = Field(
        description="Files one upload may hold (DOCPIPE_MAX_BATCH_DOCUMENTS)"
    )
    max_request_bytes: int = Field(description="Bytes one upload's whole body may have")


class Health(Schema):
    status: str
    database: bool
    storage: bool
    prefect: bool
