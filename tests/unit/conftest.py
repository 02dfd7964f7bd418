"""Fixtures of the fast room: a fresh home and SQLite database per test, no Prefect server
(a stand-in records what docpipe asks of it), no Tesseract."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from docpipe import orchestrator
from tests.helpers import TEST_MAX_FILE_BYTES, make_tenant, postgres_schema, settings_with
from tests.unit.prefect_stand_in import PrefectStandIn


@pytest.fixture(autouse=True)
def prefect(monkeypatch: pytest.MonkeyPatch) -> PrefectStandIn:
    """No test of this room reaches a Prefect server: the door answers from a stand-in."""
    stand_in = PrefectStandIn()
    for name in (
        "create_flow_run",
        "cancel_flow_run",
        "flow_run_states",
        "mark_crashed",
        "is_reachable",
        "read_flow_run",
        "label_flow_run",
        "withdraw_flow_run",
        "waiting_runs",
        "delete_batch_runs",
        "delete_ended_runs",
    ):
        monkeypatch.setattr(orchestrator, name, getattr(stand_in, name))
    return stand_in


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh home with its own SQLite database at the newest schema; settings point at it."""
    from docpipe.config import get_settings
    from docpipe.db import engine_for, upgrade_database

    for name in [n for n in os.environ if n.startswith("DOCPIPE_")]:
        monkeypatch.delenv(name)  # the e2e room's session settings, if it ran first
    home = tmp_path / "home"
    monkeypatch.setenv("DOCPIPE_HOME", str(home))
    monkeypatch.setenv("DOCPIPE_MAX_FILE_BYTES", str(TEST_MAX_FILE_BYTES))
    monkeypatch.setenv("DOCPIPE_RECOVERY_INTERVAL_SECONDS", "0")
    get_settings.cache_clear()
    upgrade_database()
    yield home
    engine_for(get_settings().database_url).dispose()
    get_settings.cache_clear()


@pytest.fixture
def client(home: Path) -> TestClient:
    """The app in process, without its lifespan (no recovery loop running beside the test)."""
    from docpipe.api.app import create_app

    return TestClient(create_app())


@pytest.fixture
def tenant(home: Path) -> tuple[str, str]:
    """A fresh standard tenant: (id, API key)."""
    return make_tenant()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The test on the home's SQLite, then on PostgreSQL in a schema of its own."""
    from docpipe.config import get_settings
    from docpipe.db import engine_for, upgrade_database

    if request.param == "sqlite":
        yield get_settings().database_url
        return
    with postgres_schema() as url:
        settings_with(monkeypatch, database_url=url)
        upgrade_database(url)
        yield url
        engine_for(url).dispose()
