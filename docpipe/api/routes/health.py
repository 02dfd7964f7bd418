"""Liveness (do the database, the storage and Prefect answer?), what this docpipe can read,
and its limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

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
# A check still running after this is given up on and the next request starts another, so
# a part that hung (a connection that never answers) is seen again once it answers...
STALE_CHECK_SECONDS = 30.0
# ...but no more than this many checks of one part hold a thread at once.
MAX_CHECKS_IN_FLIGHT = 3


@dataclass
class _Part:
    latest: Future[bool] | None = None
    started: float = 0.0
    in_flight: int = 0


_parts: dict[str, _Part] = defaultdict(_Part)
_parts_lock = threading.Lock()


def _answer_of(part: str, check: Callable[[], bool]) -> Future[bool]:
    """The check's answer to come. One still running from an earlier request is shared,
    not started again: however often /health is asked, a part that hangs holds a thread
    or a few, never one a request."""
    with _parts_lock:
        state, now = _parts[part], time.monotonic()
        latest, young = state.latest, now - state.started < STALE_CHECK_SECONDS
        full = state.in_flight >= MAX_CHECKS_IN_FLIGHT
        if latest is not None and not latest.done() and (young or full):
            return latest
        future: Future[bool] = Future()
        state.latest, state.started = future, now
        state.in_flight += 1
    threading.Thread(
        target=_run, args=(part, check, future), name=f"health-{part}", daemon=True
    ).start()
    return future


def _run(part: str, check: Callable[[], bool], future: Future[bool]) -> None:
    try:
        answer = check() is True
    except Exception:  # broken in a way its check did not foresee: not answering
        answer = False
    finally:
        with _parts_lock:
            _parts[part].in_flight -= 1
    future.set_result(answer)


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
async def health() -> Health:
    """200 whenever the API itself runs; says whether its database, storage and Prefect
    answer (each within 2 s)."""
    checks = {
        "database": _database_answers,
        "storage": _storage_answers,
        "prefect": orchestrator.is_reachable,
    }
    # Waited for here, in the event loop: a part that hangs holds no request's thread.
    answers = {part: asyncio.wrap_future(_answer_of(part, c)) for part, c in checks.items()}
    await asyncio.wait(answers.values(), timeout=CHECK_SECONDS)
    up = {part: answer.done() and answer.result() for part, answer in answers.items()}
    return Health(
        status="ok" if all(up.values()) else "degraded",
        database=up["database"],
        storage=up["storage"],
        prefect=up["prefect"],
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
