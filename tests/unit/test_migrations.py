"""Schema migrations: a fresh database gets the models' schema, and one made by the release
before migrations (docpipe 0.1, which created its tables by itself) upgrades in place."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
)

from docpipe import batches
from docpipe.db import VERSION_TABLE, check_schema, engine_for, ensure_schema, upgrade_database
from docpipe.errors import SchemaError
from docpipe.models import Base, BatchStatus, DocumentStatus, Outcomes
from tests.helpers import postgres_schema, settings_with

# The tables as docpipe 0.1 created them (Base.metadata.create_all), frozen here: the
# models move on, a database made by that release does not.
OLD = MetaData()
Table(
    "tenants",
    OLD,
    Column("id", String(64), primary_key=True),
    Column("tier", String(20), nullable=False),
    Column("api_key_hash", String(64), nullable=False, unique=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Table(
    "batches",
    OLD,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("tier", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("success_count", Integer, nullable=False),
    Column("failure_count", Integer, nullable=False),
    Column("flow_run_id", String(36)),
    Column("error", Text),
    Column("source", String(16), nullable=False),
    Column("submissions", Integer, nullable=False),
    Column("heartbeat_at", DateTime(timezone=True)),
)
Table(
    "documents",
    OLD,
    Column("id", String(36), primary_key=True),
    Column("batch_id", String(36), ForeignKey("batches.id"), nullable=False, index=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("storage_key", String(255), nullable=False),
    Column("text_key", String(255)),
    Column("status", String(20), nullable=False),
    Column("error", Text),
    Column("page_count", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("processed_at", DateTime(timezone=True)),
    Column("ocr_seconds", Float),
)
WHEN = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database, which the settings point at: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old-home' / 'docpipe.db'}"
        settings_with(monkeypatch, home=tmp_path / "old-home", database_url=url)
        yield url
        engine_for(url).dispose()
        return
    with postgres_schema() as url:
        settings_with(monkeypatch, home=tmp_path / "old-home", database_url=url)
        yield url


def release_0_1_database(url: str) -> None:
    """A database as docpipe 0.1 left it, with one finished batch of two documents."""
    with engine_for(url).begin() as connection:
        OLD.create_all(connection)
        tables = OLD.tables
        connection.execute(
            tables["tenants"].insert(),
            {"id": "acme", "tier": "vip", "api_key_hash": "0" * 64, "created_at": WHEN},
        )
        connection.execute(
            tables["batches"].insert(),
            {
                "id": "b" * 36, "tenant_id": "acme", "tier": "vip", "status": "Completed",
                "created_at": WHEN, "completed_at": WHEN, "success_count": 1,
                "failure_count": 1, "source": "api", "submissions": 1,
            },
        )  # fmt: skip
        for position, status in enumerate(["Ready", "OcrFailed"]):
            connection.execute(
                tables["documents"].insert(),
                {
                    "id": f"{position}" * 36, "batch_id": "b" * 36, "tenant_id": "acme",
                    "position": position, "file_name": f"page-{position}.png", "kind": "png",
                    "size_bytes": 10, "sha256": "f" * 64, "storage_key": f"acme/b/{position}.png",
                    "status": status, "created_at": WHEN,
                },
            )  # fmt: skip


def test_a_database_of_the_release_before_migrations_upgrades_in_place(
    empty_database: str,
) -> None:
    release_0_1_database(empty_database)

    assert upgrade_database(empty_database) == "0006_claims"

    batch = batches.find_batch("acme", "b" * 36)
    assert batch.status == BatchStatus.COMPLETED and batch.created_at == WHEN
    assert [d.status for d in batch.documents] == [DocumentStatus.READY, DocumentStatus.OCR_FAILED]
    # Documents made before languages and outputs had them: they read as the defaults.
    assert [(d.language, d.outputs) for d in batch.documents] == [(None, None), (None, None)]
    # Its counts are recorded on it, as a batch that finishes now has them: the list of
    # batches reads them there.
    [listed], total = batches.find_batches("acme", limit=20, offset=0)
    assert total == 1 and listed.outcomes == Outcomes.of(d.status for d in batch.documents)
    assert listed.outcomes.total == 2
    assert upgrade_database(empty_database) == "0006_claims"  # again: nothing to do


def test_a_fresh_database_gets_exactly_the_models_schema(empty_database: str) -> None:
    upgrade_database(empty_database)
    engine = engine_for(empty_database)
    with engine.connect() as connection:
        assert {"tenants", "batches", "documents", "docpipe_alembic_version"} <= set(
            inspect(connection).get_table_names()
        )
        # What Alembic's autogenerate would still write: nothing, or a migration is missing.
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []


def test_a_migration_that_breaks_halfway_leaves_nothing_half_made(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite too, whose driver would otherwise commit each CREATE TABLE by itself."""
    from alembic.operations import Operations

    real = Operations.create_table

    def breaks_at_documents(self: Operations, name: str, *args: Any, **kw: Any) -> object:
        if name == "documents":  # the fault: the process dies here
            raise RuntimeError("killed halfway")
        return real(self, name, *args, **kw)

    monkeypatch.setattr(Operations, "create_table", breaks_at_documents)
    with pytest.raises(RuntimeError, match="killed halfway"):
        upgrade_database(empty_database)
    with engine_for(empty_database).connect() as connection:
        assert set(inspect(connection).get_table_names()) == set()

    monkeypatch.setattr(Operations, "create_table", real)
    assert upgrade_database(empty_database) == "0006_claims"  # the next start simply does it


def test_a_schema_docpipe_did_not_make_is_refused_in_one_line(empty_database: str) -> None:
    with engine_for(empty_database).begin() as connection:
        OLD.tables["tenants"].create(connection)  # one of docpipe's tables, and no version
    with pytest.raises(SchemaError, match="some of docpipe's tables .tenants. but no schema"):
        upgrade_database(empty_database)


def test_commands_other_than_upgrade_refuse_an_old_schema_and_change_nothing(
    empty_database: str,
) -> None:
    release_0_1_database(empty_database)
    with pytest.raises(SchemaError, match=r"has no docpipe schema version.*docpipe db upgrade"):
        check_schema(empty_database)
    with pytest.raises(SchemaError, match=r"has no docpipe schema version"):
        ensure_schema(empty_database)  # what a command does: it holds data, so no change
    with engine_for(empty_database).connect() as connection:
        assert "docpipe_alembic_version" not in inspect(connection).get_table_names()
    upgrade_database(empty_database)
    check_schema(empty_database)


def test_docpipe_db_upgrade_creates_the_schema_and_says_its_revision(tmp_path: Path) -> None:
    import os
    import sys

    docpipe = Path(sys.executable).with_name("docpipe")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_")}
    env["DOCPIPE_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [str(docpipe), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("is at revision 0006_claims")
    assert (tmp_path / "home" / "docpipe.db").exists()
