"""The API's body limit, for a body sent without a length (chunked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import httpx
from fastapi import FastAPI, File, UploadFile

from docpipe.api.limits import BodyLimit


def test_a_chunked_body_is_cut_off_with_413_once_it_passes_the_limit() -> None:
    """FastAPI answers a body it could not read with a 400; the limit's 413 replaces it."""
    routed: list[int] = []
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[UploadFile], File()]) -> dict[str, int]:
        routed.append(len(files))
        return {"files": len(files)}

    limited = BodyLimit(app, limit=10_000)
    sent: list[int] = []

    async def body(size: int) -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        for _ in range(size // 1000):
            sent.append(1000)
            yield b"x" * 1000
        yield b"\r\n--b--\r\n"

    async def post(size: int) -> httpx.Response:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(
                "/upload",
                content=body(size),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )

    small = anyio.run(post, 5_000)
    assert small.status_code == 200 and routed == [1]

    sent.clear()
    large = anyio.run(post, 1_000_000)
    assert large.status_code == 413
    assert "10000 bytes at most" in large.json()["error"]
    assert routed == [1]  # the route never ran
    assert sum(sent) < 20_000  # and the rest of the body was never asked for
