"""A batch ends once: the ends that race (the summary, a cancel, a broken flow) on one row."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from docpipe import batches
from docpipe.db import session_scope
from docpipe.errors import Conflict
from docpipe.models import BatchStatus, Document, DocumentStatus, WebhookDelivery
from docpipe.tenants import set_webhook
from tests.helpers import settings_with
from tests.unit.prefect_stand_in import PrefectStandIn
from tests.unit.test_recovery_decisions import accepted_batch, running, stored


def read_batch_with_webhook(home: Path, prefect: PrefectStandIn, monkeypatch: Any) -> str:
    """A running batch whose one page is Ready, of a tenant with a webhook: the summary's turn."""
    settings_with(monkeypatch, webhook_allow_private="true")
    batch_id = accepted_batch(home)
    set_webhook(batches.get_batch_tenant(batch_id), "http://127.0.0.1:9/hook")
    running(batch_id, prefect, beat_seconds_ago=0)
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.batch_id == batch_id)
            .values(status=DocumentStatus.READY)
        )
    return batch_id


def deliveries(batch_id: str) -> list[tuple[str, int]]:
    with session_scope() as session:
        rows = session.execute(
            select(WebhookDelivery.event, WebhookDelivery.sequence).where(
                WebhookDelivery.batch_id == batch_id
            )
        )
        return [(row.event, row.sequence) for row in rows]


def test_a_cancel_that_meets_the_summary_waits_for_it_and_is_refused(
    database: str, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary has read the batch and is closing it when a cancel arrives: the cancel
    waits for the summary and answers that the batch is Completed; the batch ends once."""
    batch_id = read_batch_with_webhook(home, prefect, monkeypatch)
    summary_has_read, let_summary_go = threading.Event(), threading.Event()
    count = batches._count

    def slow_count(batch: Any) -> Any:
        if threading.current_thread().name == "summary":
            summary_has_read.set()
            let_summary_go.wait(timeout=10)
        return count(batch)

    monkeypatch.setattr(batches, "_count", slow_count)
    outcome: dict[str, Any] = {}

    def summarise() -> None:
        try:
            outcome["summary"] = batches.close_batch(batch_id)
        except Exception as error:  # noqa: BLE001 - the test reports it below
            outcome["summary"] = error

    def cancel() -> None:
        try:
            outcome["cancel"] = batches.mark_cancelled(stored(batch_id).tenant_id, batch_id)
        except Exception as error:  # noqa: BLE001 - the test reports it below
            outcome["cancel"] = error

    summary = threading.Thread(target=summarise, name="summary")
    summary.start()
    assert summary_has_read.wait(timeout=10)
    canceller = threading.Thread(target=cancel, name="cancel")
    canceller.start()
    canceller.join(timeout=1.5)  # a cancel that does not wait for the summary is done by now
    let_summary_go.set()
    summary.join(timeout=10)
    canceller.join(timeout=10)

    assert isinstance(outcome["summary"], batches.BatchSummary), outcome
    assert isinstance(outcome["cancel"], Conflict), outcome
    assert "Completed" in str(outcome["cancel"])
    assert stored(batch_id).status == BatchStatus.COMPLETED
    assert deliveries(batch_id) == [("batch.completed", 1)]


def test_a_flow_that_breaks_after_its_batch_completed_leaves_it_completed(
    database: str, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose summary was written and which then broke (handing over the next batch,
    say): the batch's documents all ended, so it stays Completed, with one webhook."""
    batch_id = read_batch_with_webhook(home, prefect, monkeypatch)
    batches.close_batch(batch_id)

    batches.mark_failed(batch_id, "dispatch raised")

    batch = stored(batch_id)
    assert (batch.status, batch.error) == (BatchStatus.COMPLETED, None)
    assert deliveries(batch_id) == [("batch.completed", 1)]


def test_a_flow_that_breaks_mid_batch_fails_the_batch_and_a_retry_redoes_its_documents(
    database: str, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its documents not done end too, with the reason, and a retry takes them again."""
    batch_id = read_batch_with_webhook(home, prefect, monkeypatch)
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.batch_id == batch_id)
            .values(status=DocumentStatus.PROCESSING)
        )

    batches.mark_failed(batch_id, "the flow broke")

    batch = stored(batch_id)
    assert (batch.status, batch.error) == (BatchStatus.FAILED, "the flow broke")
    assert deliveries(batch_id) == [("batch.failed", 1)]
    view = batches.find_batch(batch.tenant_id, batch_id)
    [document] = view.documents
    assert document.status == DocumentStatus.OCR_FAILED
    assert document.error == "not read: the batch's flow run failed"
    assert batches.prepare_retry(batch.tenant_id, batch_id) == [document.id]


def test_a_summary_after_the_batch_failed_or_retried_leaves_its_one_end(
    database: str, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary that comes after the batch ended (its task retried, or racing a failure)
    changes nothing and sends no second notice."""
    completed = read_batch_with_webhook(home, prefect, monkeypatch)
    batches.close_batch(completed)
    batches.close_batch(completed)  # the summary task, retried
    assert deliveries(completed) == [("batch.completed", 1)]

    failed = read_batch_with_webhook(home, prefect, monkeypatch)
    batches.mark_failed(failed, "the flow broke")
    batches.close_batch(failed)
    assert (stored(failed).status, stored(failed).error) == (BatchStatus.FAILED, "the flow broke")
    assert deliveries(failed) == [("batch.failed", 1)]


def test_the_failure_of_a_run_that_is_no_longer_the_batchs_changes_nothing(
    database: str, home: Path, prefect: PrefectStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older run's failure hook, late (after a cancel and a retry, say), leaves the run
    working on the batch now alone."""
    batch_id = read_batch_with_webhook(home, prefect, monkeypatch)
    current = stored(batch_id).flow_run_id
    assert current is not None

    batches.mark_failed(batch_id, "an older run broke", flow_run_id="an-older-run")
    assert stored(batch_id).status == BatchStatus.PROCESSING
    assert deliveries(batch_id) == []

    batches.mark_failed(batch_id, "this run broke", flow_run_id=current)
    assert stored(batch_id).status == BatchStatus.FAILED
