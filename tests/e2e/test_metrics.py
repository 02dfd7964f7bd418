"""GET /metrics as an operator's Prometheus sees it: a real batch with a bad document moves
the document and batch counts, the page and batch histograms, and a refused upload the
rejections; the counts come from the database, so the worker's work shows in the API's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import documents
from tests.helpers import files_part, good_files, post_batch, wait_for_batch

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(api: httpx.Client) -> Samples:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_batch_with_a_bad_document_shows_in_the_metrics(
    api: httpx.Client, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    before = scrape(api)
    files = [
        ("one.png", documents.document(documents.phrase(1), "png", seed=1)),
        ("two.pdf", documents.multipage_pdf([documents.phrase(2), documents.phrase(3)])),
        ("cut.pdf", documents.truncated(documents.document("GONE", "pdf"))),
    ]
    batch_id = post_batch(api, tenant_id, key, files)
    refused = api.post(
        "/api/documents/bulk-upload",
        headers={"X-API-Key": key},
        files=files_part([*good_files(1), ("a.gif", b"GIF89a....")]),
    )
    assert refused.status_code == 400
    assert api.post("/api/documents/upload", files=files_part(good_files(1))).status_code == 401
    batch = wait_for_batch(api, key, batch_id)
    assert (batch["successCount"], batch["failureCount"]) == (2, 1)

    after = scrape(api)
    assert value(after, "docpipe_database_up") == 1
    standard = {"tier": "standard"}
    assert grew(before, after, "docpipe_documents_total", outcome="Ready", **standard) == 2
    assert (
        grew(before, after, "docpipe_documents_total", outcome="ValidationFailed", **standard) == 1
    )
    assert grew(before, after, "docpipe_batches_total", status="Completed", **standard) == 1
    assert grew(before, after, "docpipe_upload_rejections_total", reason="invalid_file") == 1
    assert grew(before, after, "docpipe_upload_rejections_total", reason="unauthorized") == 1

    # Three pages were read (one PNG, a two-page PDF); the cut PDF never reached OCR.
    assert grew(before, after, "docpipe_ocr_page_seconds_count", **standard) == 3
    assert grew(before, after, "docpipe_ocr_page_seconds_sum", **standard) > 0
    assert grew(before, after, "docpipe_batch_seconds_count", **standard) == 1
    assert_cumulative(after, "docpipe_ocr_page_seconds", **standard)
    assert_cumulative(after, "docpipe_batch_seconds", **standard)

    upload = {"method": "POST", "route": "/api/documents/bulk-upload"}
    assert (
        grew(before, after, "docpipe_http_request_duration_seconds_count", code="202", **upload)
        == 1
    )
    assert (
        grew(before, after, "docpipe_http_request_duration_seconds_count", code="400", **upload)
        == 1
    )
    # What a scrape shows names no tenant and no key.
    text = api.get("/metrics").text
    assert tenant_id not in text and key not in text and batch_id not in text


def assert_cumulative(samples: Samples, name: str, **labels: Any) -> None:
    """Buckets never fall as their bound rises, and +Inf is the count."""
    buckets = sorted(
        (float(dict(la)["le"]), v)
        for (n, la), v in samples.items()
        if n == f"{name}_bucket" and {k: v2 for k, v2 in la if k != "le"} == labels
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == value(samples, f"{name}_count", **labels)
