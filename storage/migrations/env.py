"""Alembic environment: runs on the connection the node hands over, or on a URL."""

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.models import Base

config = context.config


def _run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    _run_on(given)
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as conn:
        _run_on(conn)
