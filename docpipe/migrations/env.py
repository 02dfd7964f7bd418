"""Alembic's environment: migrations run on the connection `docpipe.db.upgrade_database` opens."""

from alembic import context

from docpipe.db import VERSION_TABLE
from docpipe.models import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    # SQLite alters a table by copying it: Alembic's batch mode does that for us.
    render_as_batch=True,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
