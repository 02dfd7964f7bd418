"""What tests of both rooms share: tenants, uploads, waiting for a batch, whole stacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests import documents

# Limits small enough to test cheaply; everything else is the shipped default.
TEST_MAX_FILE_BYTES = 2 * 1024 * 1024
POSTGRES_URL = os.environ.get(
    "DOCPIPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_counter = iter(range(1_000_000))


def unique(prefix: str) -> str:
    """A name no other test of this run (or of another run at once) uses."""
    return f"{prefix}{os.getpid()}-{next(_counter)}"


def make_tenant(
    tier: str = "standard", *, languages: str | None = None, outputs: str | None = None
) -> tuple[str, str]:
    """A new tenant in the current settings' database: (id, API key)."""
    from docpipe.models import Tier
    from docpipe.tenants import create_tenant

    tenant, key = create_tenant(unique("t"), Tier(tier), languages=languages, outputs=outputs)
    return tenant.id, key


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL for a fresh PostgreSQL schema of its own, dropped afterwards."""
    from sqlalchemy import create_engine, text

    schema = unique("docpipe_test_").replace("-", "_")
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        from docpipe.db import engine_for

        engine_for(url).dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def files_part(named: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in named]


def post_batch(api: httpx.Client, tenant_id: str, key: str, files: list[tuple[str, bytes]]) -> str:
    """Upload a batch, which must be accepted; its id."""
    response = api.post(
        f"/api/documents/bulk-upload?tenantId={tenant_id}",
        files=files_part(files),
        headers={"X-API-Key": key},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["batchId"])


def wait_for_batch(
    api: httpx.Client,
    key: str,
    batch_id: str,
    *,
    timeout: float = 300,
    until: tuple[str, ...] = ("Completed", "Failed", "Cancelled"),
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    # Waiting for the end is one request the API answers when the batch finishes.
    wait = 20 if set(until) <= {"Completed", "Failed", "Cancelled"} else 0
    while True:
        body: dict[str, Any] = api.get(
            f"/api/batches/{batch_id}?waitSeconds={wait}", headers={"X-API-Key": key}
        ).json()
        if body["status"] in until:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {body['status']} after {timeout} s")
        if not wait:
            time.sleep(1)


def prefect_http(settings: Any, headers: dict[str, str] | None = None) -> httpx.Client:
    """A plain HTTP client of a stack's Prefect API, with its secret (or these headers)."""
    from docpipe.home import prefect_auth_headers

    if headers is None:
        headers = prefect_auth_headers(settings)
    return httpx.Client(base_url=settings.prefect_api_url, headers=headers, timeout=30)


@contextmanager
def started_stack(home: Path, **settings: Any) -> Iterator[Any]:
    """A whole stack in `home`, on free ports, with these settings; stopped afterwards."""
    from docpipe.config import Settings
    from docpipe.runtime.stack import Stack, free_port

    stack = Stack(Settings(home=home, api_port=free_port(), prefect_port=free_port(), **settings))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def cli(stack: Any, *args: str, **env: str) -> str:
    """Run `docpipe ARGS` against a stack's settings; returns what it printed."""
    from docpipe.runtime.stack import _bin, service_env

    result = subprocess.run(
        [_bin("docpipe"), *args],
        env={**service_env(stack.settings), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def settings_with(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    """Change settings for the rest of the test."""
    from docpipe.config import get_settings

    for name, value in values.items():
        monkeypatch.setenv(f"DOCPIPE_{name.upper()}", str(value))
    get_settings.cache_clear()


def stored_state(tenant_id: str, home: Path) -> tuple[int, int, list[str], list[Path]]:
    """(batch rows, document rows, stored keys, staging leftovers) for a tenant."""
    from docpipe.db import session_scope
    from docpipe.models import Batch, Document
    from docpipe.storage import get_storage

    with session_scope() as session:
        batches = session.scalar(select(func.count()).where(Batch.tenant_id == tenant_id))
        docs = session.scalar(select(func.count()).where(Document.tenant_id == tenant_id))
    staging = home / "staging"
    leftovers = list(staging.iterdir()) if staging.exists() else []
    return int(batches or 0), int(docs or 0), get_storage().keys(tenant_id), leftovers


def good_files(n: int) -> list[tuple[str, bytes]]:
    kinds = ["png", "pdf", "jpeg", "tiff"]
    return [
        (f"page-{i}.{kinds[i % 4]}", documents.document(documents.phrase(i), kinds[i % 4], seed=i))
        for i in range(n)
    ]


def is_tesseract(proc: Any) -> bool:
    """A process reading pages: the `tesseract` program, or the in-process engine's child.

    `proc` is a psutil.Process from process_iter(["name", "cmdline"]).
    """
    return bool(
        proc.info["name"] == "tesseract" or "docpipe.ocr_server" in (proc.info["cmdline"] or [])
    )


def started_by(worker_log: str, run: str) -> bool:
    """Whether a worker's log says it started flow run `run` (its id or name). Two workers
    may both try to submit a run; the one the server turned away says so."""
    said = (f"submitting flow run '{run}'", f"Flow run '{run}' submitted to infrastructure")
    lost = f"Aborted submission of flow run '{run}'"
    return any(s in worker_log for s in said) and lost not in worker_log


DOCPIPE = str(Path(sys.executable).parent / "docpipe")


def client(
    *args: str, url: str | None = None, key: str | None = None, home: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`docpipe ARGS` as a tenant runs it: no docpipe settings, its own home directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPIPE_", "XDG_"))}
    env["HOME"] = str(home)
    env |= {"DOCPIPE_API_URL": url} if url else {}
    env |= {"DOCPIPE_API_KEY": key} if key else {}
    return subprocess.run(
        [DOCPIPE, *args],
        env=env,
        cwd=home,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal, which must be exit status 2 and one line, never a traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr
