"""Serve the API with uvicorn, with bounds on a request's head that uvicorn does not set.

uvicorn's httptools protocol buffers a request's head however large it grows and waits
for it however long it takes: one client sending a 300 MB header, or a header a byte a
minute, held the API. Here a head over `max_head_bytes`, or not complete within
`head_timeout` seconds of its first byte (DOCPIPE_REQUEST_HEAD_TIMEOUT_SECONDS), gets a
431 or 408 and the connection is closed. (The body's bounds, in size and in time between
chunks, are `BodyLimit`'s.)

Run it as `python -m docpipe.api.serve`; host and port come from the settings.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from docpipe.api.limits import refuse
from docpipe.config import get_settings

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 10.0


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head that is too large or too slow."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # From the connection, not its first byte: one that sends nothing held its socket
        # for ever (uvicorn's keep-alive timer starts only after a first answer).
        self._start_head_clock()

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            if self._head_bytes == 0 and self._head_deadline is None:
                self._start_head_clock()
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: the chunk that completes a head may carry body bytes too.
        too_large = self._head_bytes > self.max_head_bytes
        if self._reading_head and too_large and not self.transport.is_closing():
            self._refuse(431, f"the request head is over {self.max_head_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and the line's end
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        if self._head_size <= self.max_head_bytes:
            super().on_headers_complete()
            return
        # A head that arrived whole in one read: the request gets a 431 from a stand-in
        # app instead of reaching docpipe's, and its connection is closed.
        app, self.app = self.app, _too_large_head(self.max_head_bytes)
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def send_400_response(self, msg: str) -> None:
        # What is not HTTP at all gets the API's error shape too.
        self._refuse(400, "not a valid HTTP request")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes = True, 0  # a kept-alive connection's next one

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def _start_head_clock(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _end_head(self) -> None:
        self._reading_head = False
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        if self._reading_head and not self.transport.is_closing():
            self._refuse(408, f"the request head took over {self.head_timeout:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        self._end_head()
        body = json.dumps({"error": reason}, separators=(",", ":")).encode()
        phrase = HTTPStatus(status).phrase
        self.transport.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()


def _too_large_head(limit: int) -> Any:
    async def refuse_head(scope: Any, receive: Any, send: Any) -> None:
        await refuse(send, 431, f"the request head is over {limit} bytes")

    return refuse_head


def main() -> None:
    settings = get_settings()
    BoundedHeadProtocol.head_timeout = settings.request_head_timeout_seconds
    uvicorn.run(
        "docpipe.api.app:app",
        host=settings.api_host,
        port=settings.api_port,
        http=BoundedHeadProtocol,
        access_log=False,
    )


if __name__ == "__main__":
    main()
