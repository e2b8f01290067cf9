"""Migration 0012 makes the id-token type optional (none: any type). Tokens of the old
default type ISO14443 become typeless, so none that was accepted before (no type was
compared) is refused after the upgrade; other types are kept and now compared."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alembic import command
from services.migrations import alembic_config, upgrade

INSERT = (
    "INSERT INTO id_tokens (token, type, status, created_at, updated_at) "
    "VALUES (?, ?, 'Accepted', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
)


def _types(path: Path) -> dict[str, str | None]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT token, type FROM id_tokens").fetchall())


def test_0012_makes_the_old_default_type_typeless(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0011")
    with sqlite3.connect(path) as conn:
        conn.execute(INSERT, ("RFID-1", "ISO14443"))
        conn.execute(INSERT, ("EMAID-1", "eMAID"))
    upgrade(url, "0012")
    assert _types(path) == {"RFID-1": None, "EMAID-1": "eMAID"}
    with sqlite3.connect(path) as conn:
        conn.execute(INSERT, ("PIN-1", None))
        # 0009's case-insensitive uniqueness survives the table's rebuild
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(INSERT, ("pin-1", None))
    command.downgrade(alembic_config(url), "0011")
    assert _types(path) == {"RFID-1": "ISO14443", "EMAID-1": "eMAID", "PIN-1": "ISO14443"}
