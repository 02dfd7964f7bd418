"""docpipe's work in numbers, kept in its database: whichever process ends a document or a
batch adds to the totals in the same transaction, and the API reads them when scraped.

Totals are only ever added to (counters stay monotonic for Prometheus), and live in their
own table, so retention deleting old batches takes nothing from them. A histogram is kept
as a count per bucket, a sum and nothing else: a scrape reads a few dozen rows however
long the history is. What is open now (batches, documents waiting) is counted live from
the open batches, which an index finds among any number of finished ones.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from docpipe.db import session_scope
from docpipe.models import (
    OPEN_DOCUMENT_STATUSES,
    Batch,
    BatchStatus,
    Document,
    DocumentStatus,
    MetricTotal,
    Tier,
)

DOCUMENTS_ENDED = "documents_ended"
BATCHES_ENDED = "batches_ended"
PAGE_SECONDS = "ocr_page_seconds"
BATCH_SECONDS = "batch_seconds"
# Upper bounds of the buckets: a page takes about a second on one core, a long PDF or a
# queue behind other batches takes minutes.
BUCKETS: dict[str, tuple[float, ...]] = {
    PAGE_SECONDS: (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
    BATCH_SECONDS: (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
}
INF = "+Inf"
OPEN_BATCH_STATUSES = [s for s in BatchStatus if not s.is_final]
# What one transaction adds: (name, labels) -> amount.
Totals = defaultdict[tuple[str, str], float]


def _labels(**labels: str) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _parse(labels: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in labels.split(",") if pair)


def _add(session: Session, totals: Totals) -> None:
    """Add to the totals in one statement, rows in key order: two transactions adding to
    the same rows lock them in the same order and never deadlock."""
    if not totals:
        return
    rows = [{"name": n, "labels": la, "value": v} for (n, la), v in sorted(totals.items())]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(MetricTotal).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name", "labels"],
            set_={"value": MetricTotal.value + statement.excluded.value},
        )
    )


def _observe(totals: Totals, name: str, values: Iterable[float], **labels: str) -> None:
    bounds = BUCKETS[name]
    for value in values:
        index = bisect.bisect_left(bounds, value)
        bucket = f"{bounds[index]:g}" if index < len(bounds) else INF
        totals[name, _labels(**labels, le=bucket)] += 1
        totals[f"{name}_sum", _labels(**labels)] += value


def count_document_end(
    session: Session,
    *,
    tier: Tier,
    status: DocumentStatus,
    documents: int = 1,
    page_seconds: Sequence[float] = (),
) -> None:
    """Documents that just reached an end state, and their pages' OCR times (in `session`,
    the transaction that ends them: counted exactly when the end is)."""
    totals: Totals = defaultdict(float)
    if documents:
        totals[DOCUMENTS_ENDED, _labels(outcome=status.value, tier=tier.value)] += documents
    _observe(totals, PAGE_SECONDS, page_seconds, tier=tier.value)
    _add(session, totals)


def count_batch_end(session: Session, batch: Batch, *, first_end: bool) -> None:
    """A batch that just reached an end state; its first end also times it from upload."""
    totals: Totals = defaultdict(float)
    totals[BATCHES_ENDED, _labels(status=batch.status.value, tier=batch.tier.value)] += 1
    if first_end and batch.completed_at is not None:
        seconds = (batch.completed_at - batch.created_at).total_seconds()
        _observe(totals, BATCH_SECONDS, [max(0.0, seconds)], tier=batch.tier.value)
    _add(session, totals)


@dataclass(frozen=True)
class Histogram:
    labels: dict[str, str]
    buckets: list[tuple[str, float]]  # cumulative, ending with +Inf
    total: float  # the sum of the values observed


@dataclass(frozen=True)
class Snapshot:
    """Every figure at one moment, as plain data for the API to publish."""

    documents_ended: list[tuple[dict[str, str], float]]
    batches_ended: list[tuple[dict[str, str], float]]
    page_seconds: list[Histogram]
    batch_seconds: list[Histogram]
    batches_open: list[tuple[dict[str, str], int]]
    documents_waiting: list[tuple[dict[str, str], int]]


def read_snapshot() -> Snapshot:
    """The totals, and what is open now: three small queries, whatever the history."""
    with session_scope() as session:
        totals = [(t.name, _parse(t.labels), t.value) for t in session.scalars(select(MetricTotal))]
        open_batches = session.execute(
            select(Batch.status, Batch.tier, func.count())
            .where(Batch.status.in_(OPEN_BATCH_STATUSES))
            .group_by(Batch.status, Batch.tier)
        ).all()
        waiting = session.execute(
            select(Document.status, Batch.tier, func.count())
            .join(Batch, Document.batch_id == Batch.id)
            .where(
                Batch.status.in_(OPEN_BATCH_STATUSES),
                Document.status.in_(list(OPEN_DOCUMENT_STATUSES)),
            )
            .group_by(Document.status, Batch.tier)
        ).all()
    return Snapshot(
        documents_ended=[(la, v) for n, la, v in totals if n == DOCUMENTS_ENDED],
        batches_ended=[(la, v) for n, la, v in totals if n == BATCHES_ENDED],
        page_seconds=_histograms(totals, PAGE_SECONDS),
        batch_seconds=_histograms(totals, BATCH_SECONDS),
        batches_open=_every_pair(OPEN_BATCH_STATUSES, open_batches),
        documents_waiting=_every_pair(OPEN_DOCUMENT_STATUSES, waiting),
    )


def _every_pair(
    statuses: Iterable[BatchStatus | DocumentStatus], counted: Iterable[Any]
) -> list[tuple[dict[str, str], int]]:
    """A count for every status and tier, 0 where there are none: a gauge that vanishes
    when nothing is open reads as missing to a dashboard or an alert, not as zero."""
    counts = {(status.value, tier.value): 0 for status in statuses for tier in Tier}
    counts.update({(status.value, tier.value): n for status, tier, n in counted})
    return [({"status": s, "tier": t}, n) for (s, t), n in sorted(counts.items())]


def _histograms(totals: list[tuple[str, dict[str, str], float]], name: str) -> list[Histogram]:
    """Per label set: the buckets' counts made cumulative, as Prometheus reads them."""
    counts: dict[str, dict[str, float]] = {}
    sums: dict[str, float] = {}
    for total_name, labels, value in totals:
        if total_name == name:
            bucket = labels.pop("le")
            counts.setdefault(_labels(**labels), {})[bucket] = value
        elif total_name == f"{name}_sum":
            sums[_labels(**labels)] = value
    histograms = []
    for key, per_bucket in sorted(counts.items()):
        running = 0.0
        buckets = []
        for bound in [*(f"{b:g}" for b in BUCKETS[name]), INF]:
            running += per_bucket.get(bound, 0.0)
            buckets.append((bound, running))
        histograms.append(Histogram(_parse(key), buckets, sums.get(key, 0.0)))
    return histograms
