"""One batch over many workers: flow runs that take a batch's documents one at a time.

A batch of more than DOCPIPE_SPLIT_PAGES pages is shared. Its own flow run starts helper
runs (the process-batch-part deployment) on the batch's tier queue, which any worker of
the pool may take, and every one of them, its own included, takes the next document no
run has, until none is left: a fast worker takes more, a helper that starts late finds
less, and the batch's own run never waits for a worker that does not come. A run beats
for the documents it holds; one that dies stops beating, and after stale_after_seconds
any run takes its documents again. The batch's own run summarises once all are done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from docpipe.config import get_settings
from docpipe.db import database_now, session_scope
from docpipe.models import Batch, BatchStatus, Document, DocumentStatus, Tier

# Marks a document that is not part of this round (Ready already, or a failure a retry
# does not redo): no run takes it.
NOT_THIS_ROUND = "-"
# Ready and Cancelled documents are never taken, whatever their claim says.
SETTLED = (DocumentStatus.READY, DocumentStatus.CANCELLED)
# Two runs asking at once may want the same document; the one that loses asks again.
CLAIM_ATTEMPTS = 10


def helper_runs(pages: int) -> int:
    """How many helper runs a round of this many pages gets (0: not shared)."""
    settings = get_settings()
    if not settings.split_pages or pages <= settings.split_pages:
        return 0
    return min(math.ceil(pages / settings.split_pages), settings.split_max_runs) - 1


def open_round(batch_id: str, document_ids: list[str]) -> int:
    """If these documents are pages enough to share (a document not read yet counts as one),
    make them the ones to take (but those a live run holds), and no others; returns how
    many helper runs the round gets. A batch not shared costs nothing here."""
    if not get_settings().split_pages or not document_ids:
        return 0
    with session_scope() as session:
        in_round = Document.id.in_(document_ids)
        pages = session.scalar(
            select(func.coalesce(func.sum(func.coalesce(Document.page_count, 1)), 0)).where(
                Document.batch_id == batch_id, in_round
            )
        )
        if not (helpers := helper_runs(int(pages or 0))):
            return 0
        stale = _stale_before(session)
        session.execute(
            update(Document)
            .where(Document.batch_id == batch_id, in_round, ~_held(stale))
            .values(claimed_by=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Document)
            .where(Document.batch_id == batch_id, ~in_round)
            .values(claimed_by=NOT_THIS_ROUND, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
    return helpers


def join(batch_id: str) -> tuple[Tier | None, str | None]:
    """A helper run's tier, or why it may not help (the batch is not being processed)."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            return None, f"no batch {batch_id!r}"
        if batch.status != BatchStatus.PROCESSING:
            return None, f"batch {batch_id} is {batch.status.value}: nothing to help with"
        return batch.tier, None


@dataclass(frozen=True)
class Claim:
    """A document a run took: `took_from` is the run that held it and stopped beating."""

    document_id: str
    file_name: str
    took_from: str | None


def claim_next(batch_id: str, run_id: str) -> Claim | None:
    """Take the batch's next document no live run holds, or None when none is left."""
    for _ in range(CLAIM_ATTEMPTS):
        with session_scope() as session:
            now = database_now(session)
            stale = now - timedelta(seconds=get_settings().stale_after_seconds)
            takeable = and_(Document.batch_id == batch_id, _takeable(stale))
            first = session.execute(
                select(Document.id, Document.file_name, Document.claimed_by)
                .where(takeable)
                .order_by(Document.position)
                .limit(1)
            ).first()
            if first is None:
                return None
            # The condition again in the UPDATE: a run that lost the race to another finds
            # the row taken (on PostgreSQL once it gets the row's lock) and updates nothing.
            result = session.execute(
                update(Document)
                .where(Document.id == first.id, takeable)
                .values(claimed_by=run_id, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                return Claim(first.id, first.file_name, first.claimed_by)
    return None


def release(document_id: str, run_id: str) -> None:
    """The run is done with the document, whatever became of it."""
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id, Document.claimed_by == run_id)
            .values(claimed_at=None)
            .execution_options(synchronize_session=False)
        )


def beat(batch_id: str, run_id: str) -> None:
    """The run still holds its documents."""
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(
                Document.batch_id == batch_id,
                Document.claimed_by == run_id,
                Document.claimed_at.is_not(None),
            )
            .values(claimed_at=database_now(session))
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class Round:
    """Where a shared batch's round stands."""

    open: int  # documents not done yet, held or not
    takeable: int  # of them, those no live run holds


def round_state(batch_id: str) -> Round:
    with session_scope() as session:
        stale = _stale_before(session)
        mine = Document.batch_id == batch_id
        open_ = session.scalar(select(func.count()).where(mine, _open()))
        takeable = session.scalar(select(func.count()).where(mine, _takeable(stale)))
    return Round(int(open_ or 0), int(takeable or 0))


def _stale_before(session: Session) -> datetime:
    """Claims beaten before this are dead: by the database's clock, as every beat is."""
    return database_now(session) - timedelta(seconds=get_settings().stale_after_seconds)


def _open() -> ColumnElement[bool]:
    """Not done this round: nobody took it yet, or a run holds it (claimed_at is set)."""
    return and_(
        Document.status.not_in(SETTLED),
        or_(Document.claimed_by.is_(None), Document.claimed_at.is_not(None)),
    )


def _held(stale: datetime) -> ColumnElement[bool]:
    """A live run holds it: it beat since `stale`."""
    return and_(Document.claimed_at.is_not(None), Document.claimed_at >= stale)


def _takeable(stale: datetime) -> ColumnElement[bool]:
    return and_(
        Document.status.not_in(SETTLED),
        or_(
            Document.claimed_by.is_(None),
            and_(Document.claimed_at.is_not(None), Document.claimed_at < stale),
        ),
    )
