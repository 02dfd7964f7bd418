"""Liveness: does the database answer, does Prefect?"""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from sqlalchemy import text

from docpipe.api.deps import SettingsDep
from docpipe.api.schemas import Health
from docpipe.db import session_scope

router = APIRouter(tags=["health"])


@router.get("/health")
def health(settings: SettingsDep) -> Health:
    """200 whenever the API itself runs; says whether its database and Prefect answer."""
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        database = True
    except Exception:
        database = False
    try:
        prefect = httpx.get(f"{settings.prefect_api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        prefect = False
    return Health(
        status="ok" if database and prefect else "degraded", database=database, prefect=prefect
    )
