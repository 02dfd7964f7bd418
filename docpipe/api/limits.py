"""Bounds on a request before and while its body is read: size, time, who, how many."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docpipe.api.errors import RETRY_SECONDS, UNAVAILABLE, http_answer
from docpipe.errors import DocpipeError, Forbidden, OverLimit, TooBusy

log = logging.getLogger(__name__)

UPLOAD_PATHS = frozenset({"/api/documents/bulk-upload", "/api/documents/upload"})
# Room for each part's headers and the multipart boundaries, well over what they take.
PART_OVERHEAD_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 1024 * 1024


def body_limit(max_documents: int, max_file_bytes: int) -> int:
    """The largest body a valid upload can have: a full batch of the largest files."""
    return max_documents * (max_file_bytes + PART_OVERHEAD_BYTES) + FORM_OVERHEAD_BYTES


class BodyLimit:
    """ASGI middleware: 413, with a reason, for a request body over `limit` bytes; 408 for
    one whose next chunk does not arrive within `idle_timeout` seconds, or that arrives at
    under `min_rate` bytes a second over any stretch of `idle_timeout` seconds.

    Starlette reads a multipart body whole, spooling its files to disk, before a route
    sees it: the per-file limit used to answer only after a 10 GB upload had been written
    to the temporary directory. This answers at once when the Content-Length is over the
    limit, without reading the body. A body sent without a length (chunked) is read until
    it passes the limit, and then answered the same way, whatever the route was doing.
    The connection is closed after the answer, as it is for any body left unread. (A body
    shorter than its Content-Length used to hold its connection open for ever.)
    """

    def __init__(
        self, app: ASGIApp, limit: int, idle_timeout: float = 30.0, min_rate: int = 0
    ) -> None:
        self.app = app
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await refuse(send, 413, self._too_large())
            return
        received = 0
        body_done = started = refused = False
        over: str | None = None
        # The rate is judged over each stretch of `idle_timeout` seconds, not since the
        # start: a burst bought a trickle minutes of holding its place.
        stretch_began, stretch_start_bytes = time.monotonic(), 0

        async def counting_receive() -> Message:
            nonlocal received, over, body_done, stretch_began, stretch_start_bytes
            if body_done:  # what comes now is the client going away: no time limit
                return await receive()
            try:
                with anyio.fail_after(self.idle_timeout):
                    message = await receive()
            except TimeoutError:
                over = "timeout"
                raise BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.limit:
                    over = "size"
                    # The route's body parser stops here; what it answers is replaced.
                    raise BodyTooLarge
                now = time.monotonic()
                if not body_done and now - stretch_began >= self.idle_timeout:
                    if received - stretch_start_bytes < self.min_rate * (now - stretch_began):
                        over = "trickle"
                        raise BodyTooSlow
                    stretch_began, stretch_start_bytes = now, received
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal started, refused
            if not over or started:  # an answer already under way goes on as it was
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not refused and message["type"] == "http.response.start":
                refused = True
                await self._refuse_for(over, send)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except (BodyTooLarge, BodyTooSlow):
            if not (started or refused):
                await self._refuse_for(over, send)

    async def _refuse_for(self, over: str | None, send: Send) -> None:
        if over == "timeout":
            reason = f"the request body stalled: nothing arrived for {self.idle_timeout:g} s"
            await refuse(send, 408, reason)
        elif over == "trickle":
            reason = f"the request body arrives at under {self.min_rate} bytes a second"
            await refuse(send, 408, reason)
        else:
            await refuse(send, 413, self._too_large())

    def _too_large(self) -> str:
        return (
            f"the request body is larger than any upload docpipe accepts "
            f"({self.limit} bytes at most: a full batch of the largest files)"
        )


async def refuse(
    send: Send, status: int, reason: str, headers: dict[str, str] | None = None
) -> None:
    """Answer `{"error": reason}` and close the connection (a body may be left unread)."""
    body = json.dumps({"error": reason}, separators=(",", ":")).encode()
    raw: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """The body passed the limit while the app was reading it."""


class BodyTooSlow(Exception):
    """The client stopped sending the body it announced."""


class UploadGate:
    """ASGI middleware: a request with a body is let in only with a valid key, for its own
    tenant, within the tenant's limits, and while the server has room for it; all of that
    before a byte of it is read.

    Before, an unauthenticated request was spooled to disk whole (up to the body limit)
    and only then refused. Room: at most `max_uploads` bodies at once, holding at most
    `max_bytes` between them (counted by Content-Length, or the body limit when chunked).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Callable[[str | None], Any],
        check_limits: Callable[[str], None],
        max_uploads: int,
        max_bytes: int,
        body_limit: int,
        max_per_tenant: int,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.check_limits = check_limits
        self.max_uploads = max_uploads
        self.max_bytes = max_bytes
        self.body_limit = body_limit
        self.max_per_tenant = max_per_tenant
        self.uploads = 0
        self.bytes = 0
        # Uploads being received, per tenant: one tenant's slow uploads never hold every
        # place the server has.
        self.receiving: Counter[str] = Counter()
        self.tenant_bytes: Counter[str] = Counter()
        # A tenant's share of the bytes: room for one upload of any size, or its part of
        # the whole, whichever is more.
        self.max_tenant_bytes = max(body_limit, max_bytes * max_per_tenant // max_uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        # Only a body declared empty goes by unchecked; any other (whatever its framing,
        # in whatever case it is spelled) is checked first.
        if declared.strip() == b"0":
            await self.app(scope, receive, send)
            return
        try:
            keys = [v for k, v in scope["headers"] if k == b"x-api-key"]
            named = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("tenantId")
            if len(keys) > 1 or (named and len(named) > 1):
                # Two readers (this gate, the route) must never pick different ones.
                raise DocpipeError("send one X-API-Key header and at most one tenantId")
            key = keys[0].decode("latin-1") if keys else None
            tenant = await run_in_threadpool(self.authenticate, key)
            if named and named[0] != tenant.id:
                raise Forbidden("tenantId is not the API key's tenant")
            upload = scope["path"] in UPLOAD_PATHS
            size = min(int(declared), self.body_limit) if declared.isdigit() else self.body_limit
            if upload:
                await run_in_threadpool(self.check_limits, tenant.id)
                if (
                    self.receiving[tenant.id] >= self.max_per_tenant
                    or self.tenant_bytes[tenant.id] + size > self.max_tenant_bytes
                ):
                    raise OverLimit(
                        f"this tenant's uploads being received already hold its share "
                        f"({self.max_per_tenant} uploads, {self.max_tenant_bytes} bytes; "
                        "DOCPIPE_TENANT_CONCURRENT_UPLOADS)",
                        retry_after=5,
                    )
                if self.uploads >= self.max_uploads or self.bytes + size > self.max_bytes:
                    raise TooBusy(
                        "the server is receiving as many uploads as it can; try again shortly"
                    )
        except DocpipeError as e:
            code, answer_headers = http_answer(e)
            await refuse(send, code, str(e), answer_headers)
            return
        except (DBAPIError, OSError) as e:
            log.error("upload refused: the database did not answer: %s", e)
            await refuse(send, 503, UNAVAILABLE, {"Retry-After": str(RETRY_SECONDS)})
            return
        if not upload:
            await self.app(scope, receive, send)
            return
        self.uploads += 1
        self.bytes += size
        self.receiving[tenant.id] += 1
        self.tenant_bytes[tenant.id] += size
        try:
            await self.app(scope, receive, send)
        finally:
            self.uploads -= 1
            self.bytes -= size
            self.receiving[tenant.id] -= 1
            self.tenant_bytes[tenant.id] -= size
            if not self.receiving[tenant.id]:
                del self.receiving[tenant.id], self.tenant_bytes[tenant.id]
