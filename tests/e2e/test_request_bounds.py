"""Ways down through the request itself: who may send a body, how large and how slow a
head or body may be, and how many uploads are received at once."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import make_tenant

pytestmark = pytest.mark.e2e

UPLOAD = "/api/documents/bulk-upload"
BIG = 100 * 1024 * 1024  # declared (under the body limit), never sent


@contextmanager
def raw(api: httpx.Client) -> Iterator[socket.socket]:
    address = urlsplit(str(api.base_url))
    assert address.hostname is not None and address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        yield conn


def answer_of(conn: socket.socket) -> tuple[int, dict[str, str], str]:
    """Read until the API closes the connection: (status, headers, body)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body.decode()


def hold_uploads(held: ExitStack, api: httpx.Client, tenant_id: str, key: str, n: int) -> None:
    """n uploads of this tenant, begun and then stalled: each holds its place."""
    for _ in range(n):
        conn = held.enter_context(raw(api))
        conn.sendall(upload_head(tenant_id, key, length=1000) + b"--b\r\n")
    time.sleep(0.5)


def upload_head(tenant_id: str, key: str | None, length: int = BIG) -> bytes:
    key_line = f"X-API-Key: {key}\r\n" if key else ""
    return (
        f"POST {UPLOAD}?tenantId={tenant_id} HTTP/1.1\r\nHost: api\r\n{key_line}"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def staged(home: Path) -> list[Path]:
    staging = home / "staging"
    return list(staging.iterdir()) if staging.exists() else []


@pytest.mark.parametrize(
    ("key", "tenant_of_key", "status"),
    [
        pytest.param(None, True, 401, id="no-key"),
        pytest.param("dp_wrong", True, 401, id="bad-key"),
        pytest.param("own", False, 403, id="another-tenants-id"),
    ],
)
def test_a_body_is_not_read_before_its_key_and_tenant_are_checked(
    api: httpx.Client, docpipe_home: Path, key: str | None, tenant_of_key: bool, status: int
) -> None:
    """The API answers from the head alone; a 100 MB body is never waited for."""
    tenant_id, own_key = make_tenant()
    other_id, _ = make_tenant()
    with raw(api) as conn:
        conn.sendall(
            upload_head(tenant_id if tenant_of_key else other_id, own_key if key else None)
            if key in (None, "own")
            else upload_head(tenant_id, key)
        )
        conn.sendall(b"--b\r\n")  # and nothing more of the 100 MB
        code, headers, body = answer_of(conn)
    assert code == status
    assert set(httpx.Response(code, content=body).json()) == {"error"}
    assert staged(docpipe_home) == []


def test_a_huge_request_head_gets_431_and_the_api_keeps_answering(api: httpx.Client) -> None:
    with raw(api) as conn:
        # Just over the limit: the API reads all of it before it answers and closes (a
        # close with bytes unread would reset the connection, losing the answer).
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\nX-Junk: " + b"x" * 70_000)
        code, _, body = answer_of(conn)
    assert code == 431
    assert "request head" in httpx.Response(code, content=body).json()["error"]
    assert api.get("/health").status_code == 200


def test_a_request_head_sent_too_slowly_gets_408(api: httpx.Client) -> None:
    with raw(api) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n")  # and never the blank line
        code, _, body = answer_of(conn)
    assert code == 408
    assert "request head took" in httpx.Response(code, content=body).json()["error"]


def test_a_connection_that_sends_nothing_is_closed_at_the_head_timeout(
    api: httpx.Client,
) -> None:
    """Anyone may connect without a key: a socket that never speaks must not be held."""
    with raw(api) as conn:
        started = time.monotonic()
        code, _, _ = answer_of(conn)  # until the API closes it (the socket's own: 30 s)
    assert code == 408
    assert time.monotonic() - started < 25  # the head timeout (3 s here), not the client's


def test_a_body_shorter_than_its_length_does_not_hold_the_connection(
    api: httpx.Client, docpipe_home: Path
) -> None:
    tenant_id, key = make_tenant()
    with raw(api) as conn:
        conn.sendall(upload_head(tenant_id, key, length=10_000) + b"--b\r\n")
        started = time.monotonic()
        code, _, body = answer_of(conn)
    assert code == 408
    assert "stalled" in httpx.Response(code, content=body).json()["error"]
    assert time.monotonic() - started < 25  # the idle timeout, not a client's patience
    assert staged(docpipe_home) == []


def test_a_body_sent_a_trickle_at_a_time_loses_its_place(
    api: httpx.Client, docpipe_home: Path
) -> None:
    """A byte every half second never stalls for the idle timeout, but would hold an
    upload's place for hours: too slow over a stretch of the idle timeout is refused, and
    a burst first buys no time (300 KB would have bought 30 s at 10 KB/s on average)."""
    tenant_id, key = make_tenant()
    with raw(api) as conn:
        conn.sendall(
            upload_head(tenant_id, key, length=1_000_000)
            + b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            + b"Content-Type: image/png\r\n\r\n"
            + b"x" * 300_000
        )
        started = time.monotonic()
        conn.settimeout(0.5)
        with contextlib.suppress(OSError):  # the API's answer and close end the trickle
            while time.monotonic() - started < 25:
                conn.sendall(b"x")
                with contextlib.suppress(TimeoutError):
                    if conn.recv(1, socket.MSG_PEEK):
                        break
        conn.settimeout(30)
        code, _, body = answer_of(conn)
    assert code == 408
    assert "bytes a second" in httpx.Response(code, content=body).json()["error"]
    assert time.monotonic() - started < 15  # two stretches of the idle timeout (3 s here)
    assert staged(docpipe_home) == []


def test_uploads_past_the_concurrent_cap_get_503_at_once(api: httpx.Client) -> None:
    """Four stalled uploads hold every place; a fifth is told to come back, unread."""
    from docpipe.config import get_settings

    settings = get_settings()
    per_tenant = settings.tenant_concurrent_uploads
    tenants = [make_tenant() for _ in range(settings.max_concurrent_uploads // per_tenant)]
    tenant_id, key = make_tenant()
    with ExitStack() as held:
        for holder, holder_key in tenants:
            hold_uploads(held, api, holder, holder_key, per_tenant)
        with raw(api) as conn:
            conn.sendall(upload_head(tenant_id, key, length=1000))
            code, headers, body = answer_of(conn)
    assert code == 503
    assert headers["retry-after"].isdigit()
    assert "try again" in httpx.Response(code, content=body).json()["error"]
    # Once they are gone, there is room again.
    time.sleep(0.5)
    assert (
        api.post(
            f"{UPLOAD}?tenantId={tenant_id}",
            headers={"X-API-Key": key},
            files=[("files", ("x.txt", b"not a document"))],
        ).status_code
        == 400
    )


def test_one_tenant_cannot_hold_every_upload_place(api: httpx.Client) -> None:
    """A tenant's slow uploads past its share get 429; another tenant still gets in."""
    from docpipe.config import get_settings

    slow_id, slow_key = make_tenant()
    other_id, other_key = make_tenant()
    with ExitStack() as held:
        hold_uploads(held, api, slow_id, slow_key, get_settings().tenant_concurrent_uploads)
        with raw(api) as conn:
            conn.sendall(upload_head(slow_id, slow_key, length=1000))
            code, headers, body = answer_of(conn)
        assert code == 429 and int(headers["retry-after"]) >= 1
        assert "being received" in httpx.Response(code, content=body).json()["error"]
        other = api.post(
            f"{UPLOAD}?tenantId={other_id}",
            headers={"X-API-Key": other_key},
            files=[("files", ("x.txt", b"not a document"))],
        )
        assert other.status_code == 400  # let in, and answered on its content


@pytest.mark.parametrize("framing", ["chunked", "Chunked", "CHUNKED", "gzip, chunked"])
def test_a_body_without_a_length_is_checked_first_however_it_is_spelled(
    api: httpx.Client, docpipe_home: Path, framing: str
) -> None:
    tenant_id, _ = make_tenant()
    with raw(api) as conn:
        conn.sendall(
            f"POST {UPLOAD}?tenantId={tenant_id} HTTP/1.1\r\nHost: api\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\n"
            f"Transfer-Encoding: {framing}\r\n\r\n1000\r\n".encode()
        )
        code, _, body = answer_of(conn)
    assert code == 401
    assert set(httpx.Response(code, content=body).json()) == {"error"}


def test_a_large_head_that_arrives_in_one_piece_gets_431(api: httpx.Client) -> None:
    headers = "".join(f"X-Filler-{i}: {'y' * 60}\r\n" for i in range(1500))  # ~100 KB
    with raw(api) as conn:
        conn.sendall(f"GET /health HTTP/1.1\r\nHost: api\r\n{headers}\r\n".encode())
        code, _, body = answer_of(conn)
    assert code == 431
    assert "request head" in httpx.Response(code, content=body).json()["error"]


def test_what_is_not_http_gets_the_error_shape(api: httpx.Client) -> None:
    with raw(api) as conn:
        conn.sendall(b"GARBAGE\r\n\r\n")
        code, headers, body = answer_of(conn)
    assert code == 400
    assert headers["content-type"] == "application/json"
    assert set(httpx.Response(code, content=body).json()) == {"error"}


def test_a_form_field_where_a_file_belongs_is_told_without_python_reprs(
    api: httpx.Client,
) -> None:
    tenant_id, key = make_tenant()
    response = api.post(
        f"/api/documents/upload?tenantId={tenant_id}",
        headers={"X-API-Key": key},
        data={"file": "just text"},
    )
    assert response.status_code == 400
    assert "<class" not in response.json()["error"]
