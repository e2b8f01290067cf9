"""Migration 0009 makes id tokens unique up to case, and refuses to run over tokens that
differ only in case (which one is right is the operator's call)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alembic import command
from services.migrations import alembic_config, upgrade

INSERT = (
    "INSERT INTO id_tokens (token, type, status, created_at, updated_at) "
    "VALUES (?, 'ISO14443', 'Accepted', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
)


def test_0009_refuses_case_clashes_then_enforces_uniqueness(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0008")
    with sqlite3.connect(path) as conn:
        conn.execute(INSERT, ("tag-a",))
        conn.execute(INSERT, ("TAG-A",))
    with pytest.raises(RuntimeError, match="TAG-A"):
        upgrade(url)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM id_tokens WHERE token = 'TAG-A'")
    upgrade(url)
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(INSERT, ("Tag-A",))
    command.downgrade(alembic_config(url), "0008")
    with sqlite3.connect(path) as conn:
        conn.execute(INSERT, ("Tag-A",))
