"""Retention: delete finished batches, their files and docpipe's Prefect runs once they are old."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, select

from docpipe import orchestrator
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, BatchStatus, Document, utcnow
from docpipe.storage import batch_folder, get_storage

log = logging.getLogger(__name__)

# Batches deleted a transaction: a first pass over months of history holds no giant one.
PAGE = 100
# A pass holds a slot of the critical queue; what is left after this long waits for the
# next one.
PASS_SECONDS = 300.0
FINAL = [s for s in BatchStatus if s.is_final]
OPEN = [s for s in BatchStatus if not s.is_final]


@dataclass
class RetentionReport:
    batches: int = 0
    documents: int = 0
    files: int = 0
    flow_runs: int = 0
    artifacts: int = 0
    # The pass stopped at PASS_SECONDS with more to delete; the next one goes on.
    more_left: bool = False
    prefect_reachable: bool = True

    def add(self, deleted: orchestrator.Deleted) -> None:
        self.flow_runs += deleted.flow_runs
        self.artifacts += deleted.artifacts


def retention_off() -> bool:
    """Whether nothing is ever deleted: both retentions are 0 (the default)."""
    settings = get_settings()
    return not settings.retention_days and not settings.prefect_retention_days


def run_retention_pass(*, page: int = PAGE, seconds: float = PASS_SECONDS) -> RetentionReport:
    """Delete the batches that ended more than `retention_days` ago, with their documents,
    files, flow runs and artifacts; then docpipe's other flow runs that ended more than
    `prefect_retention_days` ago. Open batches, and newer ones, are never touched.

    Each page of batches goes in this order: Prefect's runs and artifacts (found from the
    rows), then the rows in one transaction (the API no longer knows the batch), then the
    files (the orphan sweep removes any a crash leaves, `recovery.sweep_orphans`). If
    Prefect does not answer, the batches stay whole for the next pass.
    """
    settings = get_settings()
    report = RetentionReport()
    deadline = time.monotonic() + seconds
    now = utcnow()
    if settings.retention_days:
        cutoff = now - timedelta(days=settings.retention_days)
        while expired := _expired(cutoff, page):
            deleted = orchestrator.delete_batch_runs(expired)
            if deleted is None:
                report.prefect_reachable = False
                return report
            report.add(deleted)
            _delete_batches(list(expired), cutoff, report)
            if time.monotonic() >= deadline:
                report.more_left = True
                return report
    if days := settings.prefect_retention_days:
        ended_before, keep = now - timedelta(days=days), _current_runs()
        while True:
            deleted = orchestrator.delete_ended_runs(
                ended_before=ended_before, keep=keep, limit=orchestrator.DELETE_PAGE
            )
            if deleted is None:
                report.prefect_reachable = False
                break
            report.add(deleted)
            if deleted.flow_runs < orchestrator.DELETE_PAGE:
                break
            if time.monotonic() >= deadline:
                report.more_left = True
                break
    if report.batches or report.flow_runs:
        log.info("retention: %s", report)
    return report


def _ended_before(cutoff: datetime) -> ColumnElement[bool]:
    return and_(Batch.status.in_(FINAL), Batch.completed_at < cutoff)


def _expired(cutoff: datetime, limit: int) -> dict[str, int]:
    """The oldest expired batches, at most `limit`, with how many flow runs each had."""
    with session_scope() as session:
        rows = session.execute(
            select(Batch.id, Batch.submissions)
            .where(_ended_before(cutoff))
            .order_by(Batch.completed_at, Batch.id)
            .limit(limit)
        ).all()
    return {row.id: row.submissions for row in rows}


def _delete_batches(ids: list[str], cutoff: datetime, report: RetentionReport) -> None:
    """Delete the rows of these batches that are still expired (one retried meanwhile is
    not), then their files."""
    with session_scope() as session:
        # Each DELETE checks again that the batch is expired: a SELECT first would lock
        # nothing on SQLite, and a retry landing between the two would lose its batch.
        # From the first DELETE on, the transaction holds the rows (SQLite: the database).
        still_expired = select(Batch.id).where(Batch.id.in_(ids), _ended_before(cutoff))
        documents = session.execute(
            delete(Document)
            .where(Document.batch_id.in_(still_expired))
            .execution_options(synchronize_session=False)
        )
        gone = session.execute(
            delete(Batch)
            .where(Batch.id.in_(ids), _ended_before(cutoff))
            .returning(Batch.id, Batch.tenant_id)
            .execution_options(synchronize_session=False)
        ).all()
        report.documents += documents.rowcount  # type: ignore[attr-defined]
    report.batches += len(gone)
    storage = get_storage()
    for row in gone:
        report.files += storage.delete_folder(batch_folder(row.tenant_id, row.id))


def _current_runs() -> list[str]:
    """The flow runs of open batches: recovery still has to look at them, ended or not."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(Batch.flow_run_id).where(
                    Batch.status.in_(OPEN), Batch.flow_run_id.is_not(None)
                )
            )
        )
