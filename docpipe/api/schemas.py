"""The API's JSON shapes (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from docpipe.models import Batch, BatchStatus, Document, DocumentStatus, Outcomes


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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

    @classmethod
    def of(cls, document: Document) -> DocumentInBatch:
        return cls(
            id=document.id,
            file_name=document.file_name,
            status=document.status,
            processed_at=document.processed_at,
            error=document.error,
        )


class BatchView(Schema):
    id: str
    tenant_id: str
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    total_documents: int
    completed_documents: int
    success_count: int
    failure_count: int
    flow_run_id: str | None
    error: str | None
    documents: list[DocumentInBatch]

    @classmethod
    def of(cls, batch: Batch) -> BatchView:
        outcomes = Outcomes.of(d.status for d in batch.documents)
        return cls(
            id=batch.id,
            tenant_id=batch.tenant_id,
            status=batch.status,
            created_at=batch.created_at,
            completed_at=batch.completed_at,
            total_documents=outcomes.total,
            completed_documents=outcomes.finished,
            success_count=outcomes.succeeded,
            failure_count=outcomes.failed,
            flow_run_id=batch.flow_run_id,
            error=batch.error,
            documents=[DocumentInBatch.of(d) for d in batch.documents],
        )


class BatchSummaryView(Schema):
    id: str
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    total_documents: int
    completed_documents: int
    success_count: int
    failure_count: int
    status_url: str

    @classmethod
    def of(cls, batch: Batch) -> BatchSummaryView:
        outcomes = Outcomes.of(d.status for d in batch.documents)
        return cls(
            id=batch.id,
            status=batch.status,
            created_at=batch.created_at,
            completed_at=batch.completed_at,
            total_documents=outcomes.total,
            completed_documents=outcomes.finished,
            success_count=outcomes.succeeded,
            failure_count=outcomes.failed,
            status_url=f"/api/batches/{batch.id}",
        )


class BatchPage(Schema):
    items: list[BatchSummaryView]
    total: int
    limit: int
    offset: int


class DocumentView(Schema):
    id: str
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
    text_url: str

    @classmethod
    def of(cls, d: Document) -> DocumentView:
        return cls(
            id=d.id,
            batch_id=d.batch_id,
            tenant_id=d.tenant_id,
            file_name=d.file_name,
            kind=d.kind,
            size_bytes=d.size_bytes,
            sha256=d.sha256,
            status=d.status,
            error=d.error,
            page_count=d.page_count,
            created_at=d.created_at,
            processed_at=d.processed_at,
            ocr_seconds=d.ocr_seconds,
            text_url=f"/api/documents/{d.id}/text",
        )


class Health(Schema):
    status: str
    database: bool
    prefect: bool
