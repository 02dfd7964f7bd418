"""Liveness (do the database, the storage and Prefect answer?), what this docpipe can read,
and its limits."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from docpipe import orchestrator
from docpipe.api.deps import SettingsDep, TenantDep
from docpipe.api.limits import body_limit
from docpipe.api.schemas import Health, Languages, Limits, error_answers
from docpipe.db import session_scope
from docpipe.errors import DocpipeError
from docpipe.ocr import installed_languages
from docpipe.storage import get_storage

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> Health:
    """200 whenever the API itself runs; says whether its database, storage and Prefect answer."""
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        database = True
    except Exception:
        database = False
    try:
        get_storage().check()
        storage = True
    except DocpipeError:  # the reason is in the log, never in the answer
        storage = False
    prefect = orchestrator.is_reachable()
    return Health(
        status="ok" if database and storage and prefect else "degraded",
        database=database,
        storage=storage,
        prefect=prefect,
    )


@router.get("/api/languages", tags=["documents"], responses=error_answers(401, 503))
def languages(tenant: TenantDep, settings: SettingsDep) -> Languages:
    """The OCR languages installed, for `language=` on an upload; and this tenant's own."""
    return Languages(
        installed=installed_languages(), default=tenant.languages or settings.ocr_language
    )


@router.get("/api/limits", tags=["documents"], responses=error_answers(401))
def limits(_: TenantDep, settings: SettingsDep) -> Limits:
    """The upload limits: a client checks its files against them before sending any."""
    return Limits(
        max_file_bytes=settings.max_file_bytes,
        max_batch_documents=settings.max_batch_documents,
        max_request_bytes=body_limit(settings.max_batch_documents, settings.max_file_bytes),
    )
