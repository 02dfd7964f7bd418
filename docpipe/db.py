"""Database engine, sessions and schema migrations; SQLite by default, any SQLAlchemy URL by
setting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from docpipe.config import get_settings

MIGRATIONS = Path(__file__).with_name("migrations")
# The revision whose schema the releases before migrations created by themselves.
BASELINE_REVISION = "0001"


@lru_cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process. Its schema comes from `upgrade_database`."""
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker's threads write; busy_timeout makes
    # writers wait for each other instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def get_engine() -> Engine:
    return engine_for(get_settings().database_url)


@lru_cache
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def session_scope() -> AbstractContextManager[Session]:
    """A session in a transaction: committed on success, rolled back on any error."""
    return _session_factory(get_settings().database_url).begin()


def upgrade_database(url: str | None = None) -> str:
    """Bring the database's schema to the newest revision; returns that revision.

    A database made before docpipe had migrations (its tables, no alembic_version) is
    taken to be at the baseline and upgraded from there. Processes that start at once
    take turns.
    """
    from alembic import command
    from alembic.config import Config

    engine = engine_for(url or get_settings().database_url)
    with _one_migrator(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('docpipe-schema'))"))
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        if "batches" in tables and "alembic_version" not in tables:
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "head")
        return str(current_revision(connection))


@contextmanager
def _one_migrator(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: processes on its (local) file take a file lock."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        yield
        return
    from filelock import FileLock

    with FileLock(f"{engine.url.database}.migrate.lock"):
        yield


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
