"""Alembic environment (async): one migration history for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging.config

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import csms.tables  # noqa: F401  (registers the tables on Base.metadata)
import services.api_auth  # noqa: F401
import services.bus.tables  # noqa: F401
import services.commands.tables  # noqa: F401
import ticketing.tables  # noqa: F401
from alembic import context
from services.db import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
