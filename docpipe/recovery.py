"""Find batches that were accepted but are not moving, and get them moving again (or end them)."""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import anyio
from sqlalchemy import select

from docpipe import batches, orchestrator, webhooks
from docpipe.config import get_settings
from docpipe.db import database_now, session_scope
from docpipe.dispatch import adopt_flow_run, cancelled_in_prefect, dispatch, submit_batch
from docpipe.errors import StorageUnavailable
from docpipe.models import Batch, BatchStatus, camel_keys
from docpipe.storage import get_storage

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    submitted: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    resubmitted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    webhooks_delivered: list[str] = field(default_factory=list)
    prefect_reachable: bool = True


@dataclass(frozen=True)
class _Candidate:
    id: str
    status: BatchStatus
    flow_run_id: str | None
    created_at: datetime
    heartbeat_at: datetime | None
    submissions: int


def run_recovery_pass(*, sweep: bool = True) -> RecoveryReport:
    """Submit batches Prefect never got; resubmit, boundedly, the ones whose flow run died;
    then send the webhooks that are due, those of batches it failed included.

    With `sweep`, first remove what killed uploads left (`sweep_orphans`).
    """
    report = _recover(sweep=sweep)
    # Also while Prefect is down: a webhook needs only the database and the receiver.
    report.webhooks_delivered = webhooks.send_due()
    return report


def _recover(*, sweep: bool) -> RecoveryReport:
    settings = get_settings()
    report = RecoveryReport()
    if sweep:
        try:
            report.orphans_removed = sweep_orphans()
        except StorageUnavailable:
            # Orphans can wait for the next sweep; batches to hand over and to restart
            # need only the database and Prefect.
            log.warning("the orphan sweep was skipped: document storage is unavailable")
    with session_scope() as session:
        # Heartbeats are written by the database's clock: judged by it too, never by this
        # machine's, which may be minutes from the writer's.
        now = database_now(session)
        candidates = [
            _Candidate(b.id, b.status, b.flow_run_id, b.created_at, b.heartbeat_at, b.submissions)
            for b in session.scalars(
                select(Batch).where(Batch.status.in_([BatchStatus.QUEUED, BatchStatus.PROCESSING]))
            )
        ]
    states = orchestrator.flow_run_states([c.flow_run_id for c in candidates if c.flow_run_id])
    if states is None:
        report.prefect_reachable = False
        return report
    # Runs started from the UI or Python whose arrival no worker heard: their batches go in
    # line with the others.
    for flow_run_id in orchestrator.waiting_runs(orchestrator.INCOMING_QUEUE):
        if adopt_flow_run(flow_run_id):
            report.adopted.append(flow_run_id)
    # Waiting batches (accepted while Prefect was down, or waiting for their turn) go
    # when it is their turn; this pass is also what hands them over after an outage.
    report.submitted = dispatch()
    stale = timedelta(seconds=settings.stale_after_seconds)
    for batch in candidates:
        if batch.flow_run_id is None:
            continue
        state = states.get(batch.flow_run_id)
        if state is None:
            continue
        state_type, _started = state
        if state_type in ("CANCELLING", "CANCELLED"):
            # Someone cancelled it in Prefect (docpipe's own cancel ends the batch first):
            # the batch ends Cancelled, as if cancelled through the API.
            if cancelled_in_prefect(batch.flow_run_id):
                report.cancelled.append(batch.id)
            continue
        if state_type in ("COMPLETED", "FAILED", "CRASHED"):
            reason = f"its flow run ended {state_type.lower()} without finishing the batch"
        elif state_type == "RUNNING":
            if batch.heartbeat_at is None:
                batches.start_beat_clock(batch.id, batch.flow_run_id)
                continue  # its first beat is on its way; stale only if none comes in time
            if now - batch.heartbeat_at < stale:
                continue  # alive
            reason = f"its flow run stopped reporting for over {stale.total_seconds():g} s"
            orchestrator.mark_crashed(batch.flow_run_id, reason)
        else:
            continue  # scheduled or pending
        if batch.submissions >= settings.max_submissions:
            batches.mark_failed(batch.id, f"gave up after {batch.submissions} flow runs: {reason}")
            report.failed.append(batch.id)
            log.warning("batch %s failed: %s", batch.id, reason)
        elif submit_batch(batch.id):
            report.resubmitted.append(batch.id)
            log.warning("batch %s resubmitted: %s", batch.id, reason)
    return report


def sweep_orphans() -> list[str]:
    """Remove what a killed upload left: stored files of uncommitted batches, staging dirs."""
    settings = get_settings()
    cutoff = time.time() - settings.orphan_grace_seconds
    removed: list[str] = []
    if settings.staging_dir.is_dir():
        for leftover in settings.staging_dir.iterdir():
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(f"staging/{leftover.name}")
    storage = get_storage()
    keys = storage.keys()
    batch_of = {key: key.split("/")[1] for key in keys if key.count("/") == 2}
    with session_scope() as session:
        known = set(session.scalars(select(Batch.id).where(Batch.id.in_(set(batch_of.values())))))
    for key, batch_id in batch_of.items():
        if (batch_id not in known or ".partial-" in key) and storage.modified(key) < cutoff:
            storage.delete(key)
            removed.append(key)
    return removed


async def recover_periodically(
    interval: float,
    recover: Callable[..., RecoveryReport] = run_recovery_pass,
    *,
    sweep_interval: float | None = None,
) -> None:
    """The API's recovery loop: a pass at once, then one every `interval` seconds, for ever.

    A pass in a process that is already running costs a database query and one Prefect
    request, far less than a flow run; and it also runs while Prefect is down, so the
    batches accepted meanwhile are submitted as soon as it is back. Several API processes
    may each run it: submission is idempotent per batch and attempt.

    The orphan sweep lists every stored file, so it runs on the first pass and then once
    `sweep_interval` (default `orphan_sweep_seconds`) has passed since the last one.
    """
    if sweep_interval is None:
        sweep_interval = get_settings().orphan_sweep_seconds
    swept_at: float | None = None
    while True:
        sweep = swept_at is None or time.monotonic() - swept_at >= sweep_interval
        try:
            report = await anyio.to_thread.run_sync(functools.partial(recover, sweep=sweep))
        except Exception:
            log.exception("the recovery pass failed; the next one is in %g s", interval)
        else:
            if sweep:
                swept_at = time.monotonic()
            if any((report.submitted, report.resubmitted, report.failed, report.cancelled)) or (
                report.orphans_removed or report.webhooks_delivered
            ):
                log.warning("recovery: %s", camel_keys(asdict(report)))
        await anyio.sleep(interval)
