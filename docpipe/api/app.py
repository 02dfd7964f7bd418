"""The FastAPI application and its one mapping from domain errors to HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from docpipe.api.docs import describe_openapi, serve_docs
from docpipe.api.errors import RETRY_SECONDS, UNAVAILABLE, http_answer
from docpipe.api.limits import BodyLimit, UploadGate, body_limit
from docpipe.api.metrics import ApiMetrics, Measured, serve_metrics
from docpipe.api.routes import batches, documents, health
from docpipe.batches import check_tenant_limits
from docpipe.config import get_settings
from docpipe.db import upgrade_database
from docpipe.errors import DocpipeError, InvalidUpload
from docpipe.home import prepare_home
from docpipe.recovery import recover_periodically
from docpipe.tenants import authenticate
from docpipe.webhooks import deliver_periodically

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    prepare_home(get_settings())
    upgrade_database()  # the schema is current before the first request
    settings = get_settings()
    loops = [
        asyncio.create_task(loop(interval))
        for loop, interval in (
            (recover_periodically, settings.recovery_interval_seconds),
            (deliver_periodically, settings.webhook_poll_seconds),
        )
        if interval > 0
    ]
    yield
    for task in loops:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _problem(error: dict[str, Any]) -> str:
    """One of a request's validation errors, as `where: what`."""
    where = ".".join(str(p) for p in error.get("loc", ()))
    if where == "body.files" and error.get("type") == "missing":
        return (
            "body.files: no documents; send them as multipart/form-data, each file in a "
            "part named files"
        )
    return _no_reprs(f"{where}: {error.get('msg', '')}")


def _no_reprs(problem: str) -> str:
    """A validation message fit for a client: Python's type reprs in plain words."""
    return re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", problem)[:300]


DESCRIPTION = """\
Upload a batch of scanned documents (PDF, PNG, JPEG, TIFF), follow its status, and read
each document's text and other outputs once it is Ready.

Every request but `/health` carries the tenant's key in the `X-API-Key` header (the
**Authorize** button sets it here). `tenantId` is optional: the key names its tenant.
Every error is a 4xx or 503 with a body `{"error": "..."}`.
"""
TAGS = [
    {"name": "documents", "description": "Uploads, and each document's status and outputs."},
    {"name": "batches", "description": "A batch's status; the tenant's batches; cancel, retry."},
    {"name": "health", "description": "Whether the API, its database and Prefect answer."},
]


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="docpipe",
        summary="Batch OCR of scanned documents, orchestrated by Prefect.",
        description=DESCRIPTION,
        version="0.1.0",
        openapi_tags=TAGS,
        docs_url=None,  # served from local assets below, not a CDN
        redoc_url=None,
        # A 307 to the same path without its slash is built from the request's Host header:
        # anyone could have the API send a client to a host of their choosing.
        redirect_slashes=False,
    )
    settings = get_settings()
    limit = body_limit(settings.max_batch_documents, settings.max_file_bytes)
    # The last added runs first: a body too large for anyone is refused before its key is
    # even looked at; then key, tenant and room are checked before a byte is read.
    app.add_middleware(
        UploadGate,
        authenticate=authenticate,
        check_limits=check_tenant_limits,
        max_uploads=settings.max_concurrent_uploads,
        max_bytes=settings.max_staged_bytes,
        body_limit=limit,
        max_per_tenant=settings.tenant_concurrent_uploads,
    )
    app.add_middleware(
        BodyLimit,
        limit=limit,
        idle_timeout=settings.request_idle_timeout_seconds,
        min_rate=settings.request_min_bytes_per_second,
    )
    metrics = ApiMetrics()
    app.add_middleware(Measured, metrics=metrics)  # outermost: sees every refusal and its time
    app.include_router(documents.router)
    app.include_router(batches.router)
    app.include_router(health.router)
    serve_docs(app)
    token = settings.metrics_token
    serve_metrics(app, metrics, token.get_secret_value() if token else None)
    describe_openapi(app)

    @app.exception_handler(InvalidUpload)
    def _invalid_upload(request: Request, e: InvalidUpload) -> JSONResponse:
        # Finer than the status says: a bad file, not a malformed request (api/metrics.py).
        if not e.too_large and e.invalid_files:
            request.state.rejection = "invalid_file"
        return JSONResponse(
            status_code=413 if e.too_large else 400,
            content={
                "error": str(e),
                "invalidFiles": [{"fileName": n, "reason": r} for n, r in e.invalid_files],
            },
        )

    @app.exception_handler(DocpipeError)
    def _domain_error(_: Request, e: DocpipeError) -> JSONResponse:
        code, headers = http_answer(e)
        return JSONResponse(status_code=code, content={"error": str(e)}, headers=headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(OSError)
    def _unavailable(_: Request, e: Exception) -> JSONResponse:
        # The database or the storage did not answer: a client may try again; what broke
        # goes to the log, not to the client.
        log.error("request failed: %s: %s", type(e).__name__, e)
        return JSONResponse(
            status_code=503,
            content={"error": UNAVAILABLE},
            headers={"Retry-After": str(RETRY_SECONDS)},
        )

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (unknown route, wrong method, a body its multipart
        # parser refuses, more than 1000 parts) keep the API's one error shape.
        return JSONResponse(
            status_code=e.status_code,
            content={"error": str(e.detail)},
            headers=getattr(e, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    def _bad_request(_: Request, e: RequestValidationError) -> JSONResponse:
        # Location and message only: never the value sent back, which may be huge.
        problems = [_problem(err) for err in e.errors()[:10]]
        return JSONResponse(status_code=400, content={"error": "; ".join(problems)})

    return app


app = create_app()
