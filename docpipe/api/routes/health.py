"""Liveness (does the database answer, does Prefect?), and what this docpipe can read."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from docpipe import orchestrator
from docpipe.api.deps import SettingsDep, TenantDep
from docpipe.api.schemas import Health, Languages, error_answers
from docpipe.db import session_scope
from docpipe.ocr import installed_languages

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> Health:
    """200 whenever the API itself runs; says whether its database and Prefect answer."""
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        database = True
    except Exception:
        database = False
    prefect = orchestrator.is_reachable()
    return Health(
        status="ok" if database and prefect else "degraded", database=database, prefect=prefect
    )


@router.get("/api/languages", tags=["documents"], responses=error_answers(401, 503))
def languages(tenant: TenantDep, settings: SettingsDep) -> Languages:
    """The OCR languages installed, for `language=` on an upload; and this tenant's own."""
    return Languages(
        installed=installed_languages(), default=tenant.languages or settings.ocr_language
    )
