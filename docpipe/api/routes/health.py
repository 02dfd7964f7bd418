"""Liveness: does the database answer, does Prefect?"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from docpipe import orchestrator
from docpipe.api.schemas import Health
from docpipe.db import session_scope

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
