"""Batches: create one atomically, start and summarise its processing, read it back."""

from __future__ import annotations

import contextlib
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from docpipe import webhooks
from docpipe.config import get_settings
from docpipe.db import database_now, session_scope
from docpipe.errors import Conflict, NotFound, OverLimit
from docpipe.metrics import count_batch_end, count_document_end
from docpipe.models import (
    FINAL_DOCUMENT_STATUSES,
    OPEN_DOCUMENT_STATUSES,
    Batch,
    BatchStatus,
    Document,
    DocumentStatus,
    Outcomes,
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


def create_batch(
    tenant: Tenant,
    staged: StagedBatch,
    *,
    source: str = "api",
    language: str | None = None,
    callback_url: str | None = None,
) -> CreatedBatch:
    """Store the staged files and their rows together: all of them, or none.

    Its documents are read in `language`, else the tenant's languages, else the settings'.
    Its end is POSTed to `callback_url` (checked already), else to the tenant's webhook.
    Raises OverLimit, keeping nothing, if the tenant may not start another batch now.
    """
    storage = get_storage()
    language = language or tenant.languages or get_settings().ocr_language
    batch_id = new_id()
    document_ids = [new_id() for _ in staged.files]
    documents = [
        Document(
            id=document_id,
            batch_id=batch_id,
            tenant_id=tenant.id,
            position=position,
            file_name=staged_file.file_name,
            kind=staged_file.kind,
            size_bytes=staged_file.size,
            sha256=staged_file.sha256,
            storage_key=document_key(tenant.id, batch_id, document_id, staged_file.kind),
            language=language,
        )
        for position, (document_id, staged_file) in enumerate(
            zip(document_ids, staged.files, strict=True)
        )
    ]
    stored: list[str] = []
    try:
        # The files first, so the tenant's turn below lasts only as long as its rows.
        for document, staged_file in zip(documents, staged.files, strict=True):
            storage.put_file(staged_file.path, document.storage_key)
            stored.append(document.storage_key)
        with session_scope() as session:
            # Checked again in the tenant's turn: uploads sent at once each passed the
            # check made before their bodies were read.
            _lock_tenant(session, tenant.id)
            _check_limits(session, tenant.id, new_batch=True)
            session.add(
                Batch(
                    id=batch_id,
                    tenant_id=tenant.id,
                    tier=tenant.tier,
                    source=source,
                    document_count=len(documents),
                    callback_url=callback_url,
                )
            )
            session.add_all(documents)
            # The commit is the moment the batch exists; before it, a failure removes
            # every stored byte again.
    except BaseException:
        for key in stored:
            # A store that is down now leaves the rest to the orphan sweep (no row names them).
            with contextlib.suppress(Exception):
                storage.delete(key)
        raise
    return CreatedBatch(batch_id, document_ids, tenant.tier, BatchStatus.QUEUED)


def check_tenant_limits(tenant_id: str, *, new_batch: bool = True) -> None:
    """Raise OverLimit if the tenant may not start another batch now (0 turns a limit off);
    a retry (`new_batch=False`) reopens one, so the limits on open work hold for it too.

    Counted in the database, so every API process and the inbox see the same numbers.
    """
    with session_scope() as session:
        _check_limits(session, tenant_id, new_batch=new_batch)


def _lock_tenant(session: Session, tenant_id: str) -> None:
    """Take the tenant's turn until the transaction ends: two uploads or retries checking
    its limits at once would each see room for one more."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite locks only for a write, and reads before one see no later commit: a write
        # that changes nothing, first, makes the checks after it wait their turn.
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(tier=Tenant.tier)
            .execution_options(synchronize_session=False)
        )
    else:
        # FOR NO KEY UPDATE: a batch row written twice in one transaction (a cancel, a
        # batch's end) has its tenant key checked again, under FOR KEY SHARE, which
        # FOR UPDATE would block: a retry holding the tenant and waiting for that batch
        # deadlocked with it.
        session.execute(
            select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        )


def _check_limits(session: Session, tenant_id: str, *, new_batch: bool) -> None:
    settings = get_settings()
    now = utcnow()
    if new_batch and (limit := settings.tenant_uploads_per_minute):
        recent = session.scalars(
            select(Batch.created_at)
            .where(Batch.tenant_id == tenant_id, Batch.created_at > now - timedelta(minutes=1))
            .order_by(Batch.created_at)
        ).all()
        if len(recent) >= limit:
            wait = 60 - (now - recent[len(recent) - limit]).total_seconds()
            raise OverLimit(
                f"over {limit} uploads a minute (DOCPIPE_TENANT_UPLOADS_PER_MINUTE)",
                retry_after=max(1, math.ceil(wait)),
            )
    if limit := settings.tenant_open_batches:
        open_batches = session.scalar(
            select(func.count())
            .select_from(Batch)
            .where(
                Batch.tenant_id == tenant_id,
                Batch.status.in_([BatchStatus.QUEUED, BatchStatus.PROCESSING]),
            )
        )
        if (open_batches or 0) >= limit:
            raise OverLimit(
                f"{open_batches} batches still open; the limit is {limit} "
                "(DOCPIPE_TENANT_OPEN_BATCHES)",
                retry_after=OPEN_WORK_RETRY_SECONDS,
            )
    if limit := settings.tenant_pages_in_flight:
        # A document not yet validated counts as one page.
        pages = session.scalar(
            select(func.coalesce(func.sum(func.coalesce(Document.page_count, 1)), 0)).where(
                Document.tenant_id == tenant_id,
                Document.status.in_(list(OPEN_DOCUMENT_STATUSES)),
            )
        )
        if (pages or 0) >= limit:
            raise OverLimit(
                f"{pages} pages still being processed; the limit is {limit} "
                "(DOCPIPE_TENANT_PAGES_IN_FLIGHT)",
                retry_after=OPEN_WORK_RETRY_SECONDS,
            )


# How long a tenant over its open-work limits is told to wait: about one small batch.
OPEN_WORK_RETRY_SECONDS = 10


def next_to_dispatch(*, slots: int, vip_reserved: int) -> str | None:
    """The waiting batch (Queued, never handed to Prefect) whose turn it is, if its tier
    has room; None when none may go now.

    Room: a tier may have `slots` batches submitted and unfinished, standard ones at
    most `slots - vip_reserved`, so standard work never holds every worker slot and a VIP
    batch starts at once. Turn: VIP first; within a tier, the tenant with the fewest
    batches in flight, then the one whose last batch started longest ago (round-robin),
    then the oldest batch. One tenant's twenty batches never make another's one wait.
    """
    with session_scope() as session:
        open_rows = session.execute(
            select(Batch.id, Batch.tenant_id, Batch.tier, Batch.status, Batch.flow_run_id)
            .where(Batch.status.in_([BatchStatus.QUEUED, BatchStatus.PROCESSING]))
            .order_by(Batch.created_at, Batch.id)
        ).all()
        for tier in (Tier.VIP, Tier.STANDARD):
            rows = [r for r in open_rows if r.tier == tier]
            waiting = [r for r in rows if r.status == BatchStatus.QUEUED and not r.flow_run_id]
            in_flight = Counter(r.tenant_id for r in rows if r not in waiting)
            cap = slots if tier == Tier.VIP else max(1, slots - vip_reserved)
            if not waiting or sum(in_flight.values()) >= cap:
                continue
            tenants = {r.tenant_id for r in waiting}
            # One look-up per waiting tenant: each is the newest entry of an index, where
            # one grouped query reads every batch the tenants ever had.
            last_started = {
                t: session.scalar(
                    select(func.max(Batch.started_at)).where(
                        Batch.tenant_id == t, Batch.tier == tier
                    )
                )
                for t in tenants
            }
            never = datetime.min.replace(tzinfo=UTC)
            first_waiting = {r.tenant_id: i for i, r in reversed(list(enumerate(waiting)))}
            turn = min(
                tenants,
                key=lambda t: (
                    in_flight[t],
                    _aware(last_started.get(t)) or never,
                    first_waiting[t],
                ),
            )
            return next(r.id for r in waiting if r.tenant_id == turn)
    return None


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives an aggregate's datetime back naive (and as text): UTC all the same."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class Submission:
    """What Prefect needs to run a batch, and which submission of it this is."""

    batch_id: str
    tenant_id: str
    tier: Tier
    number: int


def next_submission(batch_id: str) -> Submission:
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        return Submission(batch.id, batch.tenant_id, batch.tier, batch.submissions + 1)


def record_submission(submission: Submission, flow_run_id: str) -> None:
    with session_scope() as session:
        batch = session.get(Batch, submission.batch_id)
        if batch is not None:
            batch.flow_run_id = flow_run_id
            batch.submissions = max(batch.submissions, submission.number)
            batch.heartbeat_at = None


def heartbeat(batch_id: str) -> None:
    """The flow run is alive; recovery leaves a batch with a fresh heartbeat alone."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is not None:
            batch.heartbeat_at = database_now(session)


def start_beat_clock(batch_id: str, flow_run_id: str) -> None:
    """Its flow run is Running but has not beaten yet: its stale_after_seconds count from
    now, by the database's clock (Prefect's start time is by another machine's)."""
    with session_scope() as session:
        session.execute(
            update(Batch)
            .where(
                Batch.id == batch_id,
                Batch.flow_run_id == flow_run_id,
                Batch.heartbeat_at.is_(None),
            )
            .values(heartbeat_at=database_now(session))
        )


class Heartbeat:
    """Beats for a batch every `heartbeat_seconds`, in a thread, while the block runs.

    `beat` is what a beat does: by default, say the batch's own run is alive.
    """

    def __init__(self, batch_id: str, *, beat: Callable[[str], None] = heartbeat) -> None:
        self.batch_id, self.beat = batch_id, beat
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="batch-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        interval = get_settings().heartbeat_seconds
        while not self.stopped.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is not worth failing a batch
                self.beat(self.batch_id)


def _locked(session: Session, batch_id: str, **options: Any) -> Batch | None:
    """The batch, its row locked until the transaction ends: the ends that race (the
    summary, a cancel, a broken flow, a retry) take turns, each seeing what the one before
    wrote. SQLite has no row locks: a write first takes the database's write lock."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Batch).where(Batch.id == batch_id).values(status=Batch.status))
    return session.get(Batch, batch_id, with_for_update=True, **options)


def mark_cancelled(tenant_id: str, batch_id: str) -> str | None:
    """Cancel an unfinished batch here; returns its flow run id, for Prefect to cancel too."""
    with session_scope() as session:
        batch = _locked(session, batch_id, options=[selectinload(Batch.documents)])
        if batch is None or batch.tenant_id != tenant_id:
            raise NotFound("batch not found")
        if batch.status.is_final:
            raise Conflict(f"batch is already {batch.status.value}")
        _end_unfinished(
            session,
            batch,
            BatchStatus.CANCELLED,
            documents=DocumentStatus.CANCELLED,
            because="batch was cancelled",
        )
        return batch.flow_run_id


def prepare_retry(tenant_id: str, batch_id: str, *, include_invalid: bool = False) -> list[str]:
    """Put a finished batch's OCR-failed and cancelled documents back in line (and, if asked,
    the ones that failed validation, whose bytes cannot have changed); returns their ids."""
    with session_scope() as session:
        _lock_tenant(session, tenant_id)
        batch = _locked(session, batch_id, options=[selectinload(Batch.documents)])
        if batch is None or batch.tenant_id != tenant_id:
            raise NotFound("batch not found")
        if not batch.status.is_final:
            raise Conflict(f"batch is still {batch.status.value}; retry it once it has finished")
        # Checked where the batch reopens, in the tenant's turn: a retry reopens a batch,
        # so the limits on open work hold for it as for an upload.
        _check_limits(session, tenant_id, new_batch=False)
        again = _requeue(batch, include_invalid=include_invalid)
        if not again:
            if any(d.status == DocumentStatus.VALIDATION_FAILED for d in batch.documents):
                raise Conflict(
                    "nothing to retry: the documents that failed, failed validation; "
                    "retry with includeInvalid=true to check them again"
                )
            raise Conflict("nothing to retry: every document is Ready")
        return again


def requeue(batch_id: str) -> list[str]:
    """Put a finished batch back in line, for a run started from the UI or Python: its
    OCR-failed and cancelled documents, as a retry does; returns their ids."""
    with session_scope() as session:
        batch = _locked(session, batch_id, options=[selectinload(Batch.documents)])
        return _requeue(batch, include_invalid=False) if batch is not None else []


def _requeue(batch: Batch, *, include_invalid: bool) -> list[str]:
    redone = {*REDONE, *([DocumentStatus.VALIDATION_FAILED] if include_invalid else [])}
    again = [d for d in batch.documents if d.status in redone]
    if not again:
        return []
    for document in again:
        document.status = DocumentStatus.UPLOADED
        document.error = None
        document.processed_at = None
        document.started_at = None
    batch.status = BatchStatus.QUEUED
    batch.completed_at = None
    batch.error = None
    batch.flow_run_id = None  # waiting for its turn again (docpipe.dispatch)
    return [d.id for d in again]


def set_status(batch_id: str, status: BatchStatus) -> None:
    with session_scope() as session:
        batch = _locked(session, batch_id)
        if batch is not None and not batch.status.is_final:
            batch.status = status


def _never_ended(batch: Batch) -> bool:
    """Whether the batch is ending for the first time: no end has recorded an outcome yet
    (a retried batch's later ends are not the time its upload took)."""
    return batch.recorded_outcomes.finished == 0


def _count(batch: Batch) -> Outcomes:
    """Record the batch's outcomes from its documents (every end state of a batch does)."""
    outcomes = Outcomes.of(d.status for d in batch.documents)
    batch.document_count = outcomes.total
    batch.success_count = outcomes.succeeded
    batch.failure_count = outcomes.failed
    batch.cancelled_count = outcomes.cancelled
    return outcomes


@dataclass(frozen=True)
class BatchPlan:
    """What a flow run has to do for one batch; `refusal` says why it may do nothing.

    `pending` pairs each document still to do with a label for its task run; `run_number`
    is which of the batch's flow runs this one is.
    """

    batch_id: str
    tenant_id: str
    tier: Tier
    source: str
    total: int
    already_done: int
    pending: list[tuple[str, str]]
    run_number: int = 1
    refusal: str | None = None

    @property
    def pending_document_ids(self) -> list[str]:
        return [document_id for document_id, _ in self.pending]


def _refused(batch_id: str, reason: str) -> BatchPlan:
    return BatchPlan(batch_id, "", Tier.STANDARD, "", 0, 0, [], refusal=reason)


def begin_processing(batch_id: str, flow_run_id: str | None) -> BatchPlan:
    """Mark the batch Processing and list the documents still to do (Ready ones are skipped).

    Whoever started the run, it may only work on a batch that exists, was not cancelled,
    is not being processed by another live run, and has a document that is not Ready yet;
    otherwise the batch is left as it is, and the plan says why. A run docpipe did not
    submit (started from the UI or Python) counts as the batch's next submission.
    """
    with session_scope() as session:
        batch = _locked(session, batch_id, options=[selectinload(Batch.documents)])
        if (reason := _refusal(session, batch_id, batch, flow_run_id)) is not None:
            return _refused(batch_id, reason)
        assert batch is not None
        pending = _to_do(batch)
        if flow_run_id and batch.flow_run_id != flow_run_id:
            batch.submissions += 1
            batch.flow_run_id = flow_run_id
        batch.status = BatchStatus.PROCESSING
        batch.heartbeat_at = database_now(session)
        batch.started_at = batch.started_at or batch.heartbeat_at
        batch.completed_at = None
        return BatchPlan(
            batch_id=batch.id,
            tenant_id=batch.tenant_id,
            tier=batch.tier,
            source=batch.source,
            total=len(batch.documents),
            already_done=len(batch.documents) - len(pending),
            pending=[(d.id, task_label(d.file_name)) for d in pending],
            run_number=max(1, batch.submissions),
        )


def refusal(batch_id: str, flow_run_id: str | None, *, from_outside: bool = False) -> str | None:
    """Why a flow run for this batch may not run (None if it may). `from_outside`: a run
    docpipe has not taken in yet, which may not start while another run is on its way."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id, options=[selectinload(Batch.documents)])
        return _refusal(session, batch_id, batch, flow_run_id, from_outside=from_outside)


# What a run redoes of a finished batch: a document that failed validation would fail it
# again (a retry with includeInvalid=true puts it back in line).
REDONE = (DocumentStatus.OCR_FAILED, DocumentStatus.CANCELLED)


def _to_do(batch: Batch) -> list[Document]:
    if batch.status.is_final:
        return [d for d in batch.documents if d.status in REDONE]
    return [d for d in batch.documents if d.status != DocumentStatus.READY]


def _refusal(
    session: Session,
    batch_id: str,
    batch: Batch | None,
    flow_run_id: str | None,
    *,
    from_outside: bool = False,
) -> str | None:
    if batch is None:
        return f"no batch {batch_id!r}"
    if batch.status == BatchStatus.CANCELLED:
        return f"batch {batch_id} was cancelled"
    if batch.status.is_final and not _to_do(batch):
        if all(d.status == DocumentStatus.READY for d in batch.documents):
            return f"batch {batch_id} is {batch.status.value} and every document is Ready"
        return (
            f"batch {batch_id} is {batch.status.value} with nothing left to redo: its failed "
            "documents failed validation (retry with includeInvalid=true to check them again)"
        )
    if _held_by_another_run(session, batch, flow_run_id):
        return f"batch {batch_id} is being processed by flow run {batch.flow_run_id}"
    if from_outside and not batch.status.is_final and batch.flow_run_id not in (None, flow_run_id):
        return f"batch {batch_id} already has flow run {batch.flow_run_id} on its way"
    return None


def _held_by_another_run(session: Session, batch: Batch, flow_run_id: str | None) -> bool:
    """Whether another flow run is processing the batch now (it beat recently, by the
    database's clock, which wrote the beat)."""
    beat = batch.heartbeat_at or batch.started_at
    return (
        batch.status == BatchStatus.PROCESSING
        and batch.flow_run_id not in (None, flow_run_id)
        and beat is not None
        and database_now(session) - beat < timedelta(seconds=get_settings().stale_after_seconds)
    )


def task_label(file_name: str, limit: int = 60) -> str:
    """A file name fit to name a task run: printable, and at most `limit` characters, the
    end (with the extension) kept."""
    printable = "".join(c if c.isprintable() and c not in "{}" else "_" for c in file_name)
    if len(printable) <= limit:
        return printable or "document"
    keep = limit - 1
    return f"{printable[: keep - keep // 3]}…{printable[-(keep // 3) :]}"


def find_by_flow_run(flow_run_id: str) -> Batch | None:
    """The batch whose current flow run this is (for operators' and Prefect's events)."""
    with session_scope() as session:
        return session.scalar(select(Batch).where(Batch.flow_run_id == flow_run_id))


def get_any_batch(batch_id: str) -> Batch | None:
    """A batch by id, whoever's it is (for flow runs and operators, never for the API)."""
    with session_scope() as session:
        return session.get(Batch, batch_id)


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

    @property
    def headline(self) -> str:
        """What the run list shows for the batch: "8 of 10 succeeded"."""
        return f"{self.succeeded} of {self.total} succeeded"

    @property
    def outcome(self) -> str:
        """all-succeeded, some-failed or all-failed (cancelled documents count as neither)."""
        if not self.failed:
            return "all-succeeded"
        return "all-failed" if not self.succeeded else "some-failed"

    def rows(self) -> list[dict[str, Any]]:
        """The outcomes table as plain rows, missing values as None."""
        return _plain_rows(self.table)

    def counts(self) -> dict[str, Any]:
        return {
            "batchId": self.batch_id,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }


def close_batch(batch_id: str) -> BatchSummary:
    """Count outcomes once every document has an end state, and close the batch."""
    with session_scope() as session:
        batch = _locked(session, batch_id, options=[selectinload(Batch.documents)])
        if batch is None:
            raise NotFound(f"batch {batch_id} does not exist")
        first_end = _never_ended(batch)
        outcomes = _count(batch)
        if outcomes.finished < outcomes.total:
            raise RuntimeError(
                f"batch {batch_id} has {outcomes.total - outcomes.finished} documents "
                "without an end state"
            )
        # A batch that ended already (a cancel that raced the last document, a run that
        # failed, this summary retried) stays as it ended, with the one notice of its end.
        if not batch.status.is_final:
            batch.completed_at = utcnow()
            batch.status = BatchStatus.COMPLETED
            count_batch_end(session, batch, first_end=first_end)
            _ended(session, batch, outcomes)
        assert batch.completed_at is not None
        return BatchSummary(
            batch_id,
            outcomes.total,
            outcomes.succeeded,
            outcomes.failed,
            outcomes.cancelled,
            batch.completed_at,
            outcomes_table(batch.documents),
        )


def outcomes_table(documents: list[Document]) -> pd.DataFrame:
    """One row per document: its outcome and how long it took."""
    table = pd.DataFrame(
        [
            {
                "documentId": d.id,
                "fileName": d.file_name,
                "status": d.status.value,
                "pages": d.page_count,
                "ocrSeconds": round(d.ocr_seconds, 3) if d.ocr_seconds is not None else None,
                # What GET /api/documents/{id}/<output> serves.
                "outputs": ", ".join(o.value for o in d.made_outputs()),
                "error": d.error,
            }
            for d in documents
        ],
        columns=["documentId", "fileName", "status", "pages", "ocrSeconds", "outputs", "error"],
    )
    # Whole pages even where a failed document has none (a float column would say 1.0).
    return table.astype({"pages": "Int64"})


def mark_failed(batch_id: str, reason: str, *, flow_run_id: str | None = None) -> None:
    """The flow itself broke: say so on the batch. With `flow_run_id`, only if that run is
    still the batch's: an older run's failure says nothing of the run working on it now."""
    with session_scope() as session:
        batch = _locked(session, batch_id, options=[selectinload(Batch.documents)])
        if batch is None or (flow_run_id is not None and batch.flow_run_id != flow_run_id):
            return
        # A batch that ended already stays as it ended: a run that broke after its summary
        # (handing over the next batch, say) did every document.
        if not batch.status.is_final:
            # Its documents not done end too, as a retry redoes them: every accepted
            # document reaches an end state, and the retry has something to take.
            _end_unfinished(
                session,
                batch,
                BatchStatus.FAILED,
                documents=DocumentStatus.OCR_FAILED,
                because="not read: the batch's flow run failed",
                error=reason[:2000],
            )


def _end_unfinished(
    session: Session,
    batch: Batch,
    status: BatchStatus,
    *,
    documents: DocumentStatus,
    because: str,
    error: str | None = None,
) -> None:
    """End the batch as `status` before its documents are all done: those not done end as
    `documents`, `because`, each counted, and its end is counted and noticed."""
    first_end, now = _never_ended(batch), utcnow()
    # One conditional statement: a document that reaches Ready meanwhile stays Ready.
    ended = session.execute(
        update(Document)
        .where(
            Document.batch_id == batch.id,
            Document.status.not_in(list(FINAL_DOCUMENT_STATUSES)),
        )
        .values(status=documents, error=because, processed_at=now)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    batch.status = status
    batch.completed_at = now
    if error is not None:
        batch.error = error
    outcomes = _count(batch)
    count_document_end(
        session,
        tier=batch.tier,
        status=documents,
        documents=ended.rowcount,  # type: ignore[attr-defined]
    )
    count_batch_end(session, batch, first_end=first_end)
    _ended(session, batch, outcomes)


def _ended(session: Session, batch: Batch, outcomes: Outcomes) -> None:
    """The batch has just ended: its webhook goes in the outbox in this same transaction,
    so the end and its notice are committed together (docpipe/webhooks.py)."""

    def summary() -> dict[str, Any]:
        return {
            "batchId": batch.id,
            "tenantId": batch.tenant_id,
            "status": batch.status.value,
            "createdAt": batch.created_at,
            "completedAt": batch.completed_at,
            "error": batch.error,
            "total": outcomes.total,
            "succeeded": outcomes.succeeded,
            "failed": outcomes.failed,
            "cancelled": outcomes.cancelled,
            "documents": [
                # outputs as a list, as GET /api/documents/{id} has them
                {k: v for k, v in row.items() if k != "ocrSeconds"}
                | {"outputs": [o.value for o in d.made_outputs()]}
                for row, d in zip(
                    _plain_rows(outcomes_table(batch.documents)), batch.documents, strict=True
                )
            ],
        }

    webhooks.record_end(session, batch, summary)


def _plain_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return table.astype(object).where(table.notna(), None).to_dict("records")  # type: ignore[return-value]


def find_batch(tenant_id: str, batch_id: str) -> Batch:
    with session_scope() as session:
        batch = session.get(
            Batch, batch_id, options=[selectinload(Batch.documents), selectinload(Batch.webhook)]
        )
        if batch is None or batch.tenant_id != tenant_id:
            raise NotFound("batch not found")
        return batch


def batch_status(tenant_id: str, batch_id: str) -> BatchStatus:
    """Just the batch's status (one small query), for clients waiting on it."""
    with session_scope() as session:
        row = session.execute(
            select(Batch.status).where(Batch.id == batch_id, Batch.tenant_id == tenant_id)
        ).first()
        if row is None:
            raise NotFound("batch not found")
        return BatchStatus(row[0])


def get_batch_tenant(batch_id: str) -> str:
    """The tenant a batch belongs to (for operators and tests, not for the API)."""
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound("batch not found")
        return batch.tenant_id


@dataclass(frozen=True)
class ListedBatch:
    """A batch as a page of the tenant's batches shows it: its outcomes, not its documents."""

    id: str
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    outcomes: Outcomes


def find_batches(tenant_id: str, *, limit: int, offset: int) -> tuple[list[ListedBatch], int]:
    """A page of the tenant's batches, newest first, and how many it has.

    A finished batch's outcomes are read from its row; only the open batches of the page
    have their documents counted, so a page costs the same however long the history.
    """
    with session_scope() as session:
        total = session.scalar(
            select(func.count()).select_from(Batch).where(Batch.tenant_id == tenant_id)
        )
        page = session.scalars(
            select(Batch)
            .where(Batch.tenant_id == tenant_id)
            .order_by(Batch.created_at.desc(), Batch.id)
            .limit(limit)
            .offset(offset)
        ).all()
        open_ids = [b.id for b in page if not b.status.is_final]
        statuses: dict[str, list[DocumentStatus]] = {batch_id: [] for batch_id in open_ids}
        if open_ids:
            for batch_id, status, count in session.execute(
                select(Document.batch_id, Document.status, func.count())
                .where(Document.batch_id.in_(open_ids))
                .group_by(Document.batch_id, Document.status)
            ):
                statuses[batch_id] += [status] * count
        listed = [
            ListedBatch(
                b.id,
                b.status,
                b.created_at,
                b.completed_at,
                Outcomes.of(statuses[b.id]) if b.id in statuses else b.recorded_outcomes,
            )
            for b in page
        ]
        return listed, int(total or 0)


def find_document(tenant_id: str, document_id: str) -> Document:
    with session_scope() as session:
        document = session.get(Document, document_id)
        if document is None or document.tenant_id != tenant_id:
            raise NotFound("document not found")
        return document
