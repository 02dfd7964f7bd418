"""The one mapping from docpipe's errors to HTTP: status code and headers."""

from __future__ import annotations

from docpipe.errors import (
    Conflict,
    DocpipeError,
    Forbidden,
    NotFound,
    OverLimit,
    StorageUnavailable,
    TooBusy,
    Unauthorized,
)

STATUS_OF: list[tuple[type[DocpipeError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (OverLimit, 429),
    (TooBusy, 503),
    (StorageUnavailable, 503),
]
# Database or storage down: a client may try again shortly.
UNAVAILABLE = "docpipe's database or storage is unavailable; try again shortly"
RETRY_SECONDS = 5


def http_answer(error: DocpipeError) -> tuple[int, dict[str, str] | None]:
    """The status code and headers an error of docpipe's is answered with (400 by default)."""
    code = next((c for cls, c in STATUS_OF if isinstance(error, cls)), 400)
    if code == 401:
        return code, {"WWW-Authenticate": "X-API-Key"}
    if isinstance(error, OverLimit):
        return code, {"Retry-After": str(error.retry_after)}
    if code == 503:
        return code, {"Retry-After": str(RETRY_SECONDS)}
    return code, None
