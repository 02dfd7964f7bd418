"""Liveness (do the database, the storage and Prefect answer?), what this docpipe can read,
and its limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

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


# Each part answers within this or counts as down: a probe with a timeout of its own (a
# load balancer's, Kubernetes') must not fail because a store retries for seconds.
CHECK_SECONDS = 2.0
_checks = ThreadPoolExecutor(max_workers=3, thread_name_prefix="health-check")
_in_flight: dict[str, Future[bool]] = {}
_in_flight_lock = threading.Lock()


def _answer_of(part: str, check: Callable[[], bool]) -> Future[bool]:
    """The check's answer to come. One still running from an earlier request is waited on,
    not started again: a part that hangs holds one thread, however often /health is asked."""
    with _in_flight_lock:
        future = _in_flight.get(part)
        if future is None or future.done():
            future = _in_flight[part] = _checks.submit(check)
        return future


def _within(future: Future[bool], deadline: float) -> bool:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except Exception:  # late, or broken in a way its check did not foresee: not answering
        return False


def _database_answers() -> bool:
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _storage_answers() -> bool:
    try:
        get_storage().check()
        return True
    except DocpipeError:  # the reason is in the log, never in the answer
        return False


@router.get("/health")
def health() -> Health:
    """200 whenever the API itself runs; says whether its database, storage and Prefect
    answer (each within 2 s)."""
    checks = {
        "database": _database_answers,
        "storage": _storage_answers,
        "prefect": orchestrator.is_reachable,
    }
    answers = [_answer_of(part, check) for part, check in checks.items()]  # all at once
    deadline = time.monotonic() + CHECK_SECONDS
    database, storage, prefect = (_within(answer, deadline) for answer in answers)
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
