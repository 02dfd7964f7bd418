"""GET /metrics in Prometheus's format: the database's totals, read when scraped, and what
this API process measures itself (request latency, refused uploads)."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client import Histogram as HistogramMetric
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docpipe.api.limits import UPLOAD_PATHS
from docpipe.metrics import Histogram, read_snapshot

log = logging.getLogger(__name__)

# Why an upload was refused, by the answer's status; the routes name finer reasons
# (invalid_file) in the request's state.
REJECTION_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    408: "too_slow",
    413: "too_large",
    429: "tenant_limit",
    503: "unavailable",
}


# Each family's labels, in the order its samples give them.
LABELS = {
    "docpipe_documents": ["outcome", "tier"],
    "docpipe_batches": ["status", "tier"],
    "docpipe_batches_open": ["status", "tier"],
    "docpipe_documents_waiting": ["status", "tier"],
}


class DatabaseCollector(Collector):
    """The totals every docpipe process adds to in the database, and what is open now."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("docpipe_database_up", "Whether the scrape could read the database.")
        try:
            snapshot = read_snapshot()
        except (DBAPIError, OSError) as e:
            log.error("metrics: the database did not answer: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _family(
            CounterMetricFamily,
            "docpipe_documents",
            "Documents that reached an end state, by outcome (Ready, ValidationFailed, "
            "OcrFailed, Cancelled) and tier; a retried document counts again.",
            snapshot.documents_ended,
        )
        yield _family(
            CounterMetricFamily,
            "docpipe_batches",
            "Batches that reached an end state, by status and tier.",
            snapshot.batches_ended,
        )
        yield _family(
            GaugeMetricFamily,
            "docpipe_batches_open",
            "Batches Queued or Processing now, by status and tier.",
            snapshot.batches_open,
        )
        yield _family(
            GaugeMetricFamily,
            "docpipe_documents_waiting",
            "Documents of open batches not yet at an end state, by status (Uploaded: not "
            "started) and tier.",
            snapshot.documents_waiting,
        )
        yield _histogram(
            "docpipe_ocr_page_seconds",
            "Seconds Tesseract took to read one page of a document that became Ready "
            "(every pass: a turned or tilted page is read again), by tier.",
            snapshot.page_seconds,
        )
        yield _histogram(
            "docpipe_batch_seconds",
            "Seconds from a batch's upload to its first end state, by tier.",
            snapshot.batch_seconds,
        )


def _family(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    documentation: str,
    samples: Sequence[tuple[dict[str, str], float]],
) -> Metric:
    family = kind(name, documentation, labels=LABELS[name])
    for labels, value in samples:
        family.add_metric([labels[n] for n in LABELS[name]], value)
    return family


def _histogram(name: str, documentation: str, histograms: list[Histogram]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["tier"])
    for h in histograms:
        family.add_metric([h.labels["tier"]], buckets=h.buckets, sum_value=h.total)
    return family


class ApiMetrics:
    """One app's registry: the database's figures and this process's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DatabaseCollector())
        self.rejections = Counter(
            "docpipe_upload_rejections",
            "Uploads this API process refused, by reason (nothing of them was stored).",
            ["reason"],
            registry=self.registry,
        )
        self.latency = HistogramMetric(
            "docpipe_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer, by method, route "
            "template and status code (an upload's include receiving its files).",
            ["method", "route", "code"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )


class Measured:
    """ASGI middleware, outermost: times every request, and counts refused uploads, whoever
    refused them (the gate before the body, the size limit, or the route)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            # The route's template, never the path a client sent: bounded label values.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )
            if scope["path"] in UPLOAD_PATHS and status >= 400:
                reason = scope.get("state", {}).get("rejection") or REJECTION_OF_STATUS.get(
                    status, "other"
                )
                self.metrics.rejections.labels(reason).inc()


def serve_metrics(app: FastAPI, metrics: ApiMetrics, token: str | None) -> None:
    """GET /metrics; with a token set, only for `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode() if token else None

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    status_code=401,
                    content={"error": "metrics need Authorization: Bearer <metrics token>"},
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
