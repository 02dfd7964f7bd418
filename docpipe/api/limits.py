"""A request body larger than any upload docpipe accepts is refused before it is read."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Room for each part's headers and the multipart boundaries, well over what they take.
PART_OVERHEAD_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 1024 * 1024


def body_limit(max_documents: int, max_file_bytes: int) -> int:
    """The largest body a valid upload can have: a full batch of the largest files."""
    return max_documents * (max_file_bytes + PART_OVERHEAD_BYTES) + FORM_OVERHEAD_BYTES


class BodyLimit:
    """ASGI middleware: 413, with a reason, for a request body over `limit` bytes.

    Starlette reads a multipart body whole, spooling its files to disk, before a route
    sees it: the per-file limit used to answer only after a 10 GB upload had been written
    to the temporary directory. This answers at once when the Content-Length is over the
    limit, without reading the body. A body sent without a length (chunked) is read until
    it passes the limit, and then answered the same way, whatever the route was doing.
    The connection is closed after the answer, as it is for any body left unread.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        over = started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    # The route's body parser stops here; what it answers is replaced.
                    raise BodyTooLarge
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal started, refused
            if not over or started:  # an answer already under way goes on as it was
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not refused and message["type"] == "http.response.start":
                refused = True
                await self._refuse(send)

        try:
            await self.app(scope, counting_receive, replacing_send)
        except BodyTooLarge:
            if not (started or refused):
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": f"the request body is larger than any upload docpipe accepts "
                f"({self.limit} bytes at most: a full batch of the largest files)"
            }
        ).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """The body passed the limit while the app was reading it."""
