"""SQLAlchemy models: tenants, their batches, and the batches' documents."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy import (
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from docpipe.errors import DocpipeError


class Tier(StrEnum):
    STANDARD = "standard"
    VIP = "vip"


class DocumentStatus(StrEnum):
    UPLOADED = "Uploaded"
    VALIDATING = "Validating"
    VALIDATION_FAILED = "ValidationFailed"
    PROCESSING = "Processing"
    OCR_FAILED = "OcrFailed"
    READY = "Ready"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_DOCUMENT_STATUSES

    @property
    def is_failure(self) -> bool:
        return self in (DocumentStatus.VALIDATION_FAILED, DocumentStatus.OCR_FAILED)


FINAL_DOCUMENT_STATUSES = frozenset(
    {
        DocumentStatus.VALIDATION_FAILED,
        DocumentStatus.OCR_FAILED,
        DocumentStatus.READY,
        DocumentStatus.CANCELLED,
    }
)
# Named rather than "not final": an index finds these few among a long history.
OPEN_DOCUMENT_STATUSES = frozenset(set(DocumentStatus) - FINAL_DOCUMENT_STATUSES)


@dataclass(frozen=True)
class Outcomes:
    """How a set of documents ended: the one place their statuses are counted."""

    total: int
    finished: int
    succeeded: int
    failed: int
    cancelled: int

    @classmethod
    def of(cls, statuses: Iterable[DocumentStatus]) -> Outcomes:
        counts = Counter(statuses)
        return cls(
            total=sum(counts.values()),
            finished=sum(n for s, n in counts.items() if s.is_final),
            succeeded=counts[DocumentStatus.READY],
            failed=sum(n for s, n in counts.items() if s.is_failure),
            cancelled=counts[DocumentStatus.CANCELLED],
        )


class Output(StrEnum):
    """A document's results; the values are the API's (`outputs`, and each endpoint's name)."""

    TEXT = "text"
    PDF = "pdf"
    HOCR = "hocr"
    WORDS = "words"


def parse_outputs(value: str) -> tuple[Output, ...]:
    """`text,pdf,words` as outputs, in their canonical order; text is always made."""
    names = {part.strip().lower() for part in value.split(",") if part.strip()}
    unknown = names - {o.value for o in Output}
    if unknown:
        raise DocpipeError(
            f"unknown outputs {', '.join(sorted(unknown))}; choose from "
            + ", ".join(o.value for o in Output)
        )
    return tuple(o for o in Output if o.value in names or o == Output.TEXT)


class BatchStatus(StrEnum):
    QUEUED = "Queued"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    CANCELLED = "Cancelled"
    FAILED = "Failed"

    @property
    def is_final(self) -> bool:
        return self in (BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.FAILED)


def camel_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A report's fields as docpipe's JSON spells them everywhere: camelCase."""
    return {to_camel(key): value for key, value in values.items()}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def _enum(cls: type[StrEnum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        length=20,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps in UTC, read back timezone-aware on every database (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[Tier] = mapped_column(_enum(Tier))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Tesseract's languages (`deu+eng`) and the outputs made (`text,pdf`); unset, the
    # settings' defaults.
    languages: Mapped[str | None] = mapped_column(String(64))
    outputs: Mapped[str | None] = mapped_column(String(64))
    # Where a batch's end is POSTed, and the secret that signs it, encrypted at rest
    # (docpipe/webhooks.py): HMAC needs the secret itself, not a hash of it.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret: Mapped[str | None] = mapped_column(Text)


class Batch(Base):
    __tablename__ = "batches"
    # A tenant's batches newest first, the open ones (few, however long the history), and
    # a tenant's latest start: what the batch list, the upload limits, dispatch and
    # recovery look up.
    __table_args__ = (
        Index("ix_batches_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_batches_status_tenant_id", "status", "tenant_id"),
        Index("ix_batches_tenant_id_tier_started_at", "tenant_id", "tier", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    tier: Mapped[Tier] = mapped_column(_enum(Tier))
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus), default=BatchStatus.QUEUED)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # Its documents' outcomes, recorded whenever it reaches an end state, so a list of
    # finished batches never reads their documents (an open batch's are counted live).
    document_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    cancelled_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="api")
    # Flow runs submitted for this batch: the idempotency key of the next one, and the
    # bound on how often recovery resubmits a batch that keeps crashing.
    submissions: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None]
    # This upload's own webhook URL, in place of its tenant's.
    callback_url: Mapped[str | None] = mapped_column(String(2048))

    documents: Mapped[list[Document]] = relationship(
        back_populates="batch", order_by="Document.position"
    )
    webhook: Mapped[WebhookDelivery | None] = relationship(lazy="raise", viewonly=True)

    @property
    def recorded_outcomes(self) -> Outcomes:
        """Its outcomes as last recorded (current once it has an end state)."""
        return Outcomes(
            total=self.document_count,
            finished=self.success_count + self.failure_count + self.cancelled_count,
            succeeded=self.success_count,
            failed=self.failure_count,
            cancelled=self.cancelled_count,
        )


class Document(Base):
    __tablename__ = "documents"
    # A tenant's documents by status: its unfinished ones, without reading its history.
    __table_args__ = (Index("ix_documents_tenant_id_status", "tenant_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    position: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(8))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(255))
    text_key: Mapped[str | None] = mapped_column(String(255))
    # The languages it is read in, fixed at upload; and the outputs made, once Ready.
    language: Mapped[str | None] = mapped_column(String(64))
    outputs: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[DocumentStatus] = mapped_column(
        _enum(DocumentStatus), default=DocumentStatus.UPLOADED
    )
    error: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    ocr_seconds: Mapped[float | None] = mapped_column(Float)
    # A batch shared by several flow runs (docpipe.parts): the run that took the document,
    # and when it last said it was still at it (None once it has finished with it).
    claimed_by: Mapped[str | None] = mapped_column(String(36))
    claimed_at: Mapped[datetime | None]

    batch: Mapped[Batch] = relationship(back_populates="documents")

    def made_outputs(self) -> list[Output]:
        """What it has to serve (one Ready from before outputs existed has its text)."""
        if self.outputs:
            return list(parse_outputs(self.outputs))
        return [Output.TEXT] if self.text_key else []


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt was used


class WebhookDelivery(Base):
    """The outbox: the webhook of a batch's latest end, written in the same transaction as
    the end, and sent until delivered or out of attempts (docpipe/webhooks.py)."""

    __tablename__ = "webhook_deliveries"
    # The due ones, however many were delivered before.
    __table_args__ = (
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    # Which end of the batch this is (a retried batch ends again): part of the delivery's
    # id, and what a sender checks before it records an attempt's outcome.
    sequence: Mapped[int] = mapped_column(Integer, default=1)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime | None]
    # A sender holds the delivery until then, so two never send the same attempt at once.
    leased_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]

    @property
    def delivery_id(self) -> str:
        """The idempotency id a receiver sees (X-Docpipe-Delivery): one per end of a batch."""
        return f"{self.batch_id}.{self.event}.{self.sequence}"


class MetricTotal(Base):
    """A running total of docpipe's metrics (docpipe.metrics): a count, or a histogram's
    bucket or sum. Only ever added to, in the transaction that ends the thing counted, so
    it is right whichever process did the work and outlives the rows retention deletes."""

    __tablename__ = "metric_totals"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Label pairs in a fixed order, `status=Ready,tier=vip`: low-cardinality values only.
    labels: Mapped[str] = mapped_column(String(160), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
