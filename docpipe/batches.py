"""Batches: create one atomically, start and summarise its processing, read it back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from docpipe.db import session_scope
from docpipe.errors import NotFound
from docpipe.models import (
    FINAL_DOCUMENT_STATUSES,
    Batch,
    BatchStatus,
    Document,
    DocumentStatus,
    Tenant,
    Tier,
    new_id,
    utcnow,
)
from docpipe.storage import document_key, get_storage
from docpipe.uploads import StagedBatch


@dataclass(frozen=True)
class CreatedBatch:
    batch_id: str
    document_ids: list[str]
    tier: Tier
    status: BatchStatus


def create_batch(tenant: Tenant, staged: StagedBatch) -> CreatedBatch:
    """Store the staged files and their rows together: all of them, or none."""
    storage = get_storage()
    batch_id = new_id()
    stored: list[str] = []
    try:
        with session_scope() as session:
            batch = Batch(id=batch_id, tenant_id=tenant.id, tier=tenant.tier)
            session.add(batch)
            document_ids = []
            for position, staged_file in enumerate(staged.files):
                document_id = new_id()
                key = document_key(tenant.id, batch_id, document_id, staged_file.kind)
                session.add(
                    Document(
                        id=document_id,
                        batch_id=batch_id,
                        tenant_id=tenant.id,
                        position=position,
                        file_name=staged_file.file_name,
                        kind=staged_file.kind,
                        size_bytes=staged_file.size,
                        sha256=staged_file.sha256,
                        storage_key=key,
                    )
                )
                storage.put_file(staged_file.path, key)
                stored.append(key)
                document_ids.append(document_id)
            # The commit is the moment the batch exists; before it, a failure removes
            # every stored byte again.
    except BaseException:
        for key in stored:
            storage.delete(key)
        raise
    return CreatedBatch(batch_id, document_ids, tenant.tier, BatchStatus.QUEUED)


def record_submission(batch_id: str, flow_run_id: str) -> None:
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is not None and batch.flow_run_id is None:
            batch.flow_run_id = flow_run_id


@dataclass(frozen=True)
class BatchPlan:
    """What a flow run has to do for one batch."""

    batch_id: str
    tier: Tier
    total: int
    already_done: int
    pending_document_ids: list[str]


def begin_processing(batch_id: str, flow_run_id: str | None) -> BatchPlan:
    """Mark the batch Processing and list the documents still to do (Ready ones are skipped)."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id, options=[selectinload(Batch.documents)])
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        batch.status = BatchStatus.PROCESSING
        batch.started_at = batch.started_at or utcnow()
        batch.completed_at = None
        if flow_run_id:
            batch.flow_run_id = flow_run_id
        pending = [d.id for d in batch.documents if d.status != DocumentStatus.READY]
        return BatchPlan(
            batch_id=batch.id,
            tier=batch.tier,
            total=len(batch.documents),
            already_done=len(batch.documents) - len(pending),
            pending_document_ids=pending,
        )


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    total: int
    succeeded: int
    failed: int
    cancelled: int
    completed_at: datetime
    table: pd.DataFrame

    @property
    def message(self) -> str:
        return f"Batch {self.batch_id} complete: {self.succeeded} succeeded, {self.failed} failed"


def summarize_batch(batch_id: str) -> BatchSummary:
    """Count outcomes once every document has an end state, and close the batch."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id, options=[selectinload(Batch.documents)])
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        table = outcomes_table(batch.documents)
        unfinished = table[~table["status"].isin([s.value for s in FINAL_DOCUMENT_STATUSES])]
        if not unfinished.empty:
            raise RuntimeError(
                f"batch {batch_id} has {len(unfinished)} documents without an end state"
            )
        counts = table["status"].value_counts()
        succeeded = int(counts.get(DocumentStatus.READY.value, 0))
        failed = int(
            counts.get(DocumentStatus.VALIDATION_FAILED.value, 0)
            + counts.get(DocumentStatus.OCR_FAILED.value, 0)
        )
        cancelled = int(counts.get(DocumentStatus.CANCELLED.value, 0))
        batch.success_count = succeeded
        batch.failure_count = failed
        batch.completed_at = utcnow()
        batch.status = BatchStatus.COMPLETED
        return BatchSummary(
            batch_id, len(table), succeeded, failed, cancelled, batch.completed_at, table
        )


def outcomes_table(documents: list[Document]) -> pd.DataFrame:
    """One row per document: its outcome and how long it took."""
    return pd.DataFrame(
        [
            {
                "documentId": d.id,
                "fileName": d.file_name,
                "status": d.status.value,
                "pages": d.page_count,
                "ocrSeconds": round(d.ocr_seconds, 3) if d.ocr_seconds is not None else None,
                "error": d.error,
            }
            for d in documents
        ],
        columns=["documentId", "fileName", "status", "pages", "ocrSeconds", "error"],
    )


def mark_failed(batch_id: str, reason: str) -> None:
    """The flow itself broke: say so on the batch."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is not None:
            batch.status = BatchStatus.FAILED
            batch.error = reason[:2000]
            batch.completed_at = utcnow()


def get_batch(tenant_id: str, batch_id: str) -> Batch:
    with session_scope() as session:
        batch = session.get(Batch, batch_id, options=[selectinload(Batch.documents)])
        if batch is None or batch.tenant_id != tenant_id:
            raise NotFound("batch not found")
        return batch


def list_batches(tenant_id: str, *, limit: int, offset: int) -> tuple[list[Batch], int]:
    with session_scope() as session:
        total = session.scalar(
            select(func.count()).select_from(Batch).where(Batch.tenant_id == tenant_id)
        )
        batches = session.scalars(
            select(Batch)
            .where(Batch.tenant_id == tenant_id)
            .options(selectinload(Batch.documents))
            .order_by(Batch.created_at.desc(), Batch.id)
            .limit(limit)
            .offset(offset)
        ).all()
        return list(batches), int(total or 0)


def get_document(tenant_id: str, document_id: str) -> Document:
    with session_scope() as session:
        document = session.get(Document, document_id)
        if document is None or document.tenant_id != tenant_id:
            raise NotFound("document not found")
        return document
