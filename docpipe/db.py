"""Database engine, sessions and schema migrations; SQLite by default, any SQLAlchemy URL by
setting."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from docpipe.config import get_settings
from docpipe.errors import SchemaError

MIGRATIONS = Path(__file__).with_name("migrations")
# The revision whose schema the releases before migrations created by themselves.
BASELINE_REVISION = "0001"
BASELINE_TABLES = ("tenants", "batches", "documents")
# docpipe's own name for Alembic's version table: another application's Alembic in the
# same schema keeps its own.
VERSION_TABLE = "docpipe_alembic_version"
MIGRATION_WAIT_SECONDS = 120
CONNECT_TIMEOUT_SECONDS = 10


@lru_cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process. Its schema comes from `upgrade_database`."""
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        # libpq waits for ever on a host that does not answer: a request, or a check of
        # /health, would hold its thread as long.
        engine = create_engine(
            url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        )
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


@lru_cache
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def session_scope() -> AbstractContextManager[Session]:
    """A session in a transaction: committed on success, rolled back on any error."""
    return _session_factory(get_settings().database_url).begin()


def database_now(session: Session) -> datetime:
    """The database's clock, in UTC: heartbeats are written and judged by this one clock,
    whichever machine's process writes or judges them (their clocks may differ)."""
    if session.get_bind().dialect.name == "sqlite":
        # CURRENT_TIMESTAMP has whole seconds only; SQLite's 'now' is UTC.
        value = session.scalar(select(func.strftime("%Y-%m-%d %H:%M:%f", "now")))
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    # PostgreSQL's now() is when the transaction began: these sessions are short.
    return session.scalars(select(func.now())).one().astimezone(UTC)


@contextmanager
def exclusive(name: str, *, url: str | None = None, home: Path | None = None) -> Iterator[None]:
    """Hold the lock `name` for the block, waiting for it, against every process that uses
    this database: on PostgreSQL a session advisory lock, which every machine sees (and
    which ends with its holder's connection); on SQLite, one machine's, a file in the home."""
    from filelock import FileLock

    settings = get_settings()
    url = url or settings.database_url
    if url.startswith("sqlite"):
        path = (home or settings.home) / "run" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path):
            yield
        return
    key = int.from_bytes(
        hashlib.sha256(f"docpipe:{name}".encode()).digest()[:8], "big", signed=True
    )
    with engine_for(url).connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            connection.commit()


def upgrade_database(url: str | None = None) -> str:
    """Bring the database's schema to the newest revision; returns that revision.

    A database made before docpipe had migrations (its three tables, no version table) is
    taken to be at the baseline and upgraded from there. Processes that start at once take
    turns. Raises SchemaError, with the reason in one line, when it cannot.
    """
    from alembic import command
    from alembic.util import CommandError
    from filelock import Timeout

    url = url or get_settings().database_url
    engine = _migration_engine(url)
    try:
        with _one_migrator(engine), engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_WAIT_SECONDS}s'"))
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('docpipe-schema'))"))
            config = _alembic_config(connection)
            tables = set(inspect(connection).get_table_names()) & {*BASELINE_TABLES, VERSION_TABLE}
            if tables == set(BASELINE_TABLES):
                command.stamp(config, BASELINE_REVISION)
            elif tables and VERSION_TABLE not in tables:
                raise SchemaError(
                    f"the database has some of docpipe's tables ({', '.join(sorted(tables))}) "
                    "but no schema version: it is not one docpipe made; use an empty database"
                )
            command.upgrade(config, "head")
            return str(current_revision(connection))
    except CommandError as e:  # e.g. a revision this release does not know: a newer one's
        raise SchemaError(f"the database's schema is not one this docpipe knows: {e}") from e
    except Timeout as e:
        raise SchemaError("another process is upgrading the database; try again") from e
    except SQLAlchemyError as e:
        raise SchemaError(f"the database's schema could not be upgraded: {_short(e)}") from e
    finally:
        engine.dispose()


def write_revision(message: str) -> Path:
    """Generate the next migration from how the models differ from the newest revision."""
    import tempfile

    from alembic import command
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    number = f"{len(list(script.walk_revisions())) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        upgrade_database(url)
        engine = _migration_engine(url)
        with engine.begin() as connection:
            command.revision(
                _alembic_config(connection), message=message, autogenerate=True, rev_id=number
            )
        engine.dispose()
    (path,) = MIGRATIONS.glob(f"versions/{number}_*.py")
    return path


def check_schema(url: str | None = None) -> None:
    """Raise SchemaError unless the database is at this release's schema (without changing it)."""
    from alembic.script import ScriptDirectory

    url = url or get_settings().database_url
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    try:
        with engine_for(url).connect() as connection:
            found = current_revision(connection)
    except SQLAlchemyError as e:
        raise SchemaError(f"the database does not answer: {_short(e)}") from e
    if found != head:
        where = "has no docpipe schema version" if found is None else f"is at revision {found}"
        raise SchemaError(
            f"the database {where}, this docpipe needs {head}: run `docpipe db upgrade` "
            "(make up, docpipe worker and the API do it at start)"
        )


def ensure_schema(url: str | None = None) -> None:
    """For a command: an empty database (a new home) gets the schema; one that holds data
    must be at this release's schema already (SchemaError otherwise), and is not changed."""
    url = url or get_settings().database_url
    try:
        check_schema(url)
    except SchemaError:
        with engine_for(url).connect() as connection:
            known = set(inspect(connection).get_table_names()) & {*BASELINE_TABLES, VERSION_TABLE}
        if known:
            raise
        upgrade_database(url)


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _migration_engine(url: str) -> Engine:
    """An engine for one migration. On SQLite its DDL runs inside the transaction, which
    pysqlite would otherwise commit statement by statement: a migration that breaks
    halfway leaves nothing half-made."""
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool)
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def _one_migrator(engine: Engine) -> Iterator[None]:
    """SQLite has no advisory locks: processes on its (local) file take a file lock."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        yield
        return
    from filelock import FileLock

    with FileLock(f"{engine.url.database}.migrate.lock", timeout=MIGRATION_WAIT_SECONDS):
        yield


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _short(error: Exception) -> str:
    """The first line of a database error, without SQLAlchemy's background link."""
    return str(getattr(error, "orig", None) or error).splitlines()[0][:300]
