"""Runs the Alembic migration history (the only way tables are created)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic.config import Config

from alembic import command
from services.db import check_reachable
from services.settings import DatabaseUnreachable

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade to ``revision``. Safe to call with an event loop running in this thread
    (Alembic's async environment runs its own loop, so it then runs in a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _upgrade(database_url, revision)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(_upgrade, database_url, revision).result()


def _upgrade(database_url: str, revision: str) -> None:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnreachable(
                    f"cannot reach the database at {database_url}: {exc}"
                ) from None
    # One connection first: an unreachable database is one line, not Alembic's traceback.
    asyncio.run(check_reachable(database_url))
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
