"""Fixtures of the real stack: one Prefect server, worker and API for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from docpipe.runtime.stack import free_port
from tests import documents
from tests.helpers import TEST_MAX_FILE_BYTES, make_tenant, postgres_schema, started_stack
from tests.s3 import S3Server, seaweedfs


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
        # The webhook tests' receivers listen on loopback, and their retries come quickly.
        "DOCPIPE_WEBHOOK_ALLOW_PRIVATE": "true",
        "DOCPIPE_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "DOCPIPE_WEBHOOK_POLL_SECONDS": "0.5",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from docpipe.config import get_settings
    from docpipe.db import upgrade_database
    from docpipe.home import prepare_home

    get_settings.cache_clear()
    prepare_home(get_settings())  # as every docpipe process does before it writes
    upgrade_database()
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


@pytest.fixture(scope="session")
def api(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.settings.api_url, timeout=60) as client:
        yield client


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, docpipe_home: Path) -> Iterator[str]:
    """Run the test on the default SQLite, then on PostgreSQL in a schema of its own."""
    from docpipe.config import get_settings
    from docpipe.db import upgrade_database

    if request.param == "sqlite":
        yield get_settings().database_url
        return
    with postgres_schema() as url:
        os.environ["DOCPIPE_DATABASE_URL"] = url
        get_settings.cache_clear()
        upgrade_database(url)
        try:
            yield url
        finally:
            os.environ.pop("DOCPIPE_DATABASE_URL")
            get_settings.cache_clear()


@pytest.fixture
def tenant(docpipe_home: Path) -> tuple[str, str]:
    """A fresh standard tenant: (id, API key)."""
    return make_tenant()


@pytest.fixture(scope="session")
def sample_pages() -> dict[str, tuple[str, bytes]]:
    """One document of each kind, with the phrase drawn on it."""
    return {
        kind: (documents.phrase(i), documents.document(documents.phrase(i), kind, seed=i))
        for i, kind in enumerate(["pdf", "png", "jpeg", "tiff"])
    }


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Any]:
    """A stack of this test's own, to stop, kill and start parts of."""
    with started_stack(tmp_path) as stack:
        yield stack


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on loopback with a bucket and credentials (tests/s3.py says how to use it)."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
