"""Hand waiting batches to Prefect when it is their turn: round-robin across a tier's
tenants, with room always kept for VIP work.

Prefect serves a queue first come, first served, and a worker whose slots are all busy
makes even a VIP run wait. So a batch is submitted only when its tier has room
(DOCPIPE_DISPATCH_SLOTS, of which DOCPIPE_VIP_RESERVED_SLOTS standard work never takes),
and the next one is chosen by `batches.next_to_dispatch`. It runs after every upload,
when a batch ends, after a cancel, and in every recovery pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

from docpipe import batches
from docpipe.config import get_settings
from docpipe.submit import submit_batch

log = logging.getLogger(__name__)


def dispatch() -> list[str]:
    """Submit waiting batches while it is their turn and their tier has room; their ids.

    A batch Prefect does not take (it is down) stays waiting for the next dispatch.
    """
    settings = get_settings()
    slots = settings.dispatch_slots or settings.worker_limit
    submitted: list[str] = []
    with _one_at_a_time():
        while (
            batch_id := batches.next_to_dispatch(
                slots=slots, vip_reserved=settings.vip_reserved_slots
            )
        ) is not None:
            if submit_batch(batch_id) is None:
                break
            submitted.append(batch_id)
    return submitted


@contextlib.contextmanager
def _one_at_a_time() -> Iterator[None]:
    """Dispatches on this home wait for each other, so two never fill the same slot."""
    path = get_settings().home / "run" / "dispatch.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
