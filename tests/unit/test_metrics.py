"""/metrics from the database: what is open counted live, what ended counted once in totals
that retention never takes back, written safely by many processes at once; and its token."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from docpipe import batches
from docpipe.config import get_settings
from docpipe.db import session_scope
from docpipe.models import Batch, DocumentStatus, Tier, utcnow
from docpipe.tenants import get_tenant
from docpipe.uploads import stage_files
from tests import documents
from tests.helpers import make_tenant, postgres_schema, settings_with

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def unsubmitted_batch(tenant_id: str, count: int) -> str:
    tenant = get_tenant(tenant_id)
    assert tenant is not None
    pages = [
        (f"p{i}.png", io.BytesIO(documents.document("X", "png", seed=i))) for i in range(count)
    ]
    with stage_files(pages, get_settings()) as staged:
        return batches.create_batch(tenant, staged).batch_id


def test_open_work_is_counted_live_and_ended_work_for_good(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, key = make_tenant("vip")
    batch_id = unsubmitted_batch(tenant_id, 3)
    vip = {"tier": "vip"}

    now = scrape(client)
    assert value(now, "docpipe_batches_open", status="Queued", **vip) == 1
    assert value(now, "docpipe_documents_waiting", status="Uploaded", **vip) == 3
    assert value(now, "docpipe_documents_total", outcome="Cancelled", **vip) is None

    cancelled = client.post(f"/api/batches/{batch_id}/cancel", headers={"X-API-Key": key})
    assert cancelled.status_code == 200

    ended = scrape(client)  # nothing open reads as 0, not as a metric gone missing
    assert value(ended, "docpipe_batches_open", status="Queued", **vip) == 0
    assert value(ended, "docpipe_batches_open", status="Processing", tier="standard") == 0
    assert value(ended, "docpipe_documents_waiting", status="Uploaded", **vip) == 0
    assert value(ended, "docpipe_documents_total", outcome="Cancelled", **vip) == 3
    assert value(ended, "docpipe_batches_total", status="Cancelled", **vip) == 1
    assert value(ended, "docpipe_batch_seconds_count", **vip) == 1
    assert value(ended, "docpipe_batch_seconds_bucket", le="+Inf", **vip) == 1

    # Retention deletes the batch's rows; the counters Prometheus has seen never go down.
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.completed_at = utcnow() - timedelta(days=40)
    settings_with(monkeypatch, retention_days=30)
    from docpipe.retention import run_retention_pass

    assert run_retention_pass().batches == 1
    later = scrape(client)
    for name, labels in [
        ("docpipe_documents_total", {"outcome": "Cancelled", **vip}),
        ("docpipe_batches_total", {"status": "Cancelled", **vip}),
        ("docpipe_batch_seconds_count", vip),
    ]:
        assert value(later, name, **labels) == value(ended, name, **labels), name


def test_a_cancel_of_a_finished_batch_counts_nothing_again(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    batch_id = unsubmitted_batch(tenant_id, 1)
    client.post(f"/api/batches/{batch_id}/cancel", headers={"X-API-Key": key})
    again = client.post(f"/api/batches/{batch_id}/cancel", headers={"X-API-Key": key})
    assert again.status_code == 409
    samples = scrape(client)
    assert value(samples, "docpipe_batches_total", status="Cancelled", tier="standard") == 1


def test_many_writers_at_once_lose_no_count_on_postgresql(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers on several machines end documents at once: every end is counted, none twice,
    and adding to the same rows never deadlocks."""
    from docpipe.db import engine_for, upgrade_database
    from docpipe.metrics import count_document_end, read_snapshot

    with postgres_schema() as url:
        settings_with(monkeypatch, database_url=url)
        upgrade_database()

        def end_documents(i: int) -> None:
            for _ in range(10):
                with session_scope() as session:
                    count_document_end(
                        session,
                        tier=Tier.VIP if i % 2 else Tier.STANDARD,
                        status=DocumentStatus.READY,
                        page_seconds=[0.3, 1.5, 200.0],
                    )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(end_documents, range(8)))
        snapshot = read_snapshot()
        engine_for(url).dispose()
    assert sorted((labels["tier"], v) for labels, v in snapshot.documents_ended) == [
        ("standard", 40),
        ("vip", 40),
    ]
    [standard, _] = snapshot.page_seconds
    assert dict(standard.buckets)["0.5"] == 40  # 0.3 s pages
    assert dict(standard.buckets)["2"] == 80  # and the 1.5 s ones
    assert dict(standard.buckets)["120"] == 80  # the 200 s ones only in +Inf
    assert dict(standard.buckets)["+Inf"] == 120
    assert standard.total == pytest.approx(40 * 201.8)


def test_a_metrics_token_keeps_the_figures_to_the_scraper(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_with(monkeypatch, metrics_token="s3cret-scrape")
    from docpipe.api.app import create_app

    client = TestClient(create_app())
    refused = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert refused.json() == {"error": "metrics need Authorization: Bearer <metrics token>"}
    assert client.get("/metrics").status_code == 401
    assert value(scrape(client, Authorization="Bearer s3cret-scrape"), "docpipe_database_up") == 1
