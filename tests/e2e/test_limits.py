"""The API's body limit, for a body sent without a length (chunked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, File, UploadFile

from docpipe.api.limits import BodyLimit

pytestmark = pytest.mark.e2e


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


def small_gate(app: Any) -> Any:
    """An upload gate with room for 4 uploads and 1000 bytes; the key names the tenant."""
    from types import SimpleNamespace

    from docpipe.api.limits import UploadGate

    return UploadGate(
        app,
        authenticate=lambda key: SimpleNamespace(id=key),
        check_limits=lambda tenant_id: None,
        max_uploads=4,
        max_bytes=1000,
        body_limit=600,
        max_per_tenant=2,
    )


def test_one_tenant_holds_at_most_its_share_of_the_bytes_being_received() -> None:
    """Two huge declared uploads of one tenant used to fill the server's whole byte budget,
    so every other tenant got 503."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = small_gate(app)
    release = anyio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield b"x"
        await release.wait()
        yield b"y" * 589

    async def post(tenant: str, content: Any, length: int) -> httpx.Response:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(
                "/api/documents/bulk-upload",
                content=content,
                headers={"X-API-Key": tenant, "Content-Length": str(length)},
            )

    async def scenario() -> list[int]:
        codes: list[int] = []
        async with anyio.create_task_group() as tasks:

            async def first() -> None:
                codes.append((await post("evil", held_body(), 590)).status_code)

            tasks.start_soon(first)
            await anyio.sleep(0.1)  # evil's first upload is being received, holding 590
            codes.append((await post("evil", b"z" * 590, 590)).status_code)
            codes.append((await post("zeta", b"z" * 100, 100)).status_code)
            release.set()
        return codes

    second, other, first = anyio.run(scenario)
    assert (first, second, other) == (200, 429, 200)


def test_two_keys_or_two_tenant_ids_are_refused() -> None:
    """The gate and the route must never read different ones."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached")

    gate = small_gate(app)

    async def post(url: str, headers: list[tuple[str, str]]) -> httpx.Response:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(url, content=b"x", headers=headers)

    two_keys = anyio.run(post, "/api/documents/upload", [("X-API-Key", "a"), ("X-API-Key", "b")])
    assert two_keys.status_code == 400 and "one X-API-Key" in two_keys.json()["error"]
    two_ids = anyio.run(post, "/api/documents/upload?tenantId=a&tenantId=b", [("X-API-Key", "a")])
    assert two_ids.status_code == 400
