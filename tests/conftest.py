"""Fixtures: one real docpipe stack (Prefect server, worker, API) for the session."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from docpipe.runtime.stack import free_port
from tests import documents

# Limits small enough to test cheaply; everything else is the shipped default.
TEST_MAX_FILE_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="session")
def docpipe_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point this process's settings at a fresh home, as the stack's processes will be."""
    home = tmp_path_factory.mktemp("docpipe-home")
    env = {
        "DOCPIPE_HOME": str(home),
        "DOCPIPE_API_PORT": str(free_port()),
        "DOCPIPE_PREFECT_PORT": str(free_port()),
        "DOCPIPE_MAX_FILE_BYTES": str(TEST_MAX_FILE_BYTES),
        # The scheduled scans would race the tests that scan and recover by hand;
        # their schedules are checked on the deployments instead.
        "DOCPIPE_INGEST_INTERVAL_SECONDS": "86400",
        "DOCPIPE_RECOVERY_INTERVAL_SECONDS": "86400",
        "DOCPIPE_RECOVERY_SCHEDULE_SECONDS": "86400",
        # Short enough for the tests of stalled requests to wait them out.
        "DOCPIPE_REQUEST_HEAD_TIMEOUT_SECONDS": "3",
        "DOCPIPE_REQUEST_IDLE_TIMEOUT_SECONDS": "3",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from docpipe.config import get_settings

    get_settings.cache_clear()
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def stack(docpipe_home: Path) -> Iterator[Any]:
    """The real service: Prefect server on SQLite, pool, deployments, one worker, the API."""
    from docpipe.config import get_settings
    from docpipe.runtime.stack import Stack

    running = Stack(get_settings())
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def prefect_api(stack: Any) -> Iterator[None]:
    """Let this process talk to the stack's Prefect server (for in-process flow runs)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from docpipe.home import prefect_auth_string

    updates = {
        PREFECT_API_URL: stack.settings.prefect_api_url,
        PREFECT_API_AUTH_STRING: prefect_auth_string(stack.settings),
    }
    with temporary_settings(updates=updates):
        yield
        # Send what this process still holds before the server goes away.
        APILogWorker.drain_all()
        EventsWorker.drain_all()


def prefect_http(settings: Any, headers: dict[str, str] | None = None) -> httpx.Client:
    """A plain HTTP client of a stack's Prefect API, with its secret (or these headers)."""
    from docpipe.home import prefect_auth_headers

    if headers is None:
        headers = prefect_auth_headers(settings)
    return httpx.Client(base_url=settings.prefect_api_url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def api(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.settings.api_url, timeout=60) as client:
        yield client


POSTGRES_URL = os.environ.get(
    "DOCPIPE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, docpipe_home: Path) -> Iterator[str]:
    """Run the test on the default SQLite, then on PostgreSQL in a schema of its own."""
    from docpipe.config import get_settings

    if request.param == "sqlite":
        yield get_settings().database_url
        return
    from sqlalchemy import create_engine, text

    schema = f"docpipe_test_{os.getpid()}_{next(_tenant_counter)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    os.environ["DOCPIPE_DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        yield url
    finally:
        os.environ.pop("DOCPIPE_DATABASE_URL")
        get_settings.cache_clear()
        from docpipe.db import engine_for

        engine_for(url).dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


_tenant_counter = iter(range(1_000_000))


def make_tenant(tier: str = "standard") -> tuple[str, str]:
    from docpipe.models import Tier
    from docpipe.tenants import create_tenant

    tenant_id = f"t{os.getpid()}-{next(_tenant_counter)}"
    tenant, key = create_tenant(tenant_id, Tier(tier))
    return tenant.id, key


@pytest.fixture
def tenant(docpipe_home: Path) -> tuple[str, str]:
    """A fresh standard tenant: (id, API key)."""
    return make_tenant()


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


@pytest.fixture(scope="session")
def sample_pages() -> dict[str, tuple[str, bytes]]:
    """One document of each kind, with the phrase drawn on it."""
    return {
        kind: (documents.phrase(i), documents.document(documents.phrase(i), kind, seed=i))
        for i, kind in enumerate(["pdf", "png", "jpeg", "tiff"])
    }


@contextmanager
def started_stack(home: Path, **settings: Any) -> Iterator[Any]:
    """A whole stack in `home`, on free ports, with these settings; stopped afterwards."""
    from docpipe.config import Settings
    from docpipe.runtime.stack import Stack

    stack = Stack(Settings(home=home, api_port=free_port(), prefect_port=free_port(), **settings))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Any]:
    """A stack of this test's own, to stop, kill and start parts of."""
    with started_stack(tmp_path) as stack:
        yield stack


def cli(stack: Any, *args: str, **env: str) -> str:
    """Run `docpipe ARGS` against a stack's settings; returns what it printed."""
    import subprocess

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
