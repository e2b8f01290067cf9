"""Raw message log retention deletes old frames and keeps recent ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from csms.state import MESSAGE_LOG
from services.db import Database, utcnow
from tests.conftest import Running, make_settings, running_system


async def test_old_frames_are_pruned_recent_ones_kept(database_url: str) -> None:
    settings = make_settings(database_url, message_log_retention_days=7)
    async with running_system(settings) as running:
        await _seed(running, settings.database_url)
        deleted = await running.system.csms.retention.run_once()
        assert deleted == 3
        db: Database = running.system.db
        async with db.engine.connect() as conn:
            left = (await conn.execute(select(MESSAGE_LOG.c.message_id))).scalars().all()
        assert sorted(left) == ["new-0", "new-1"]
        assert await running.system.csms.retention.run_once() == 0


async def _seed(running: Running, _url: str) -> None:
    now = utcnow()
    rows = [
        {
            "charger_id": "CP",
            "direction": "in",
            "message_type": 2,
            "action": "Heartbeat",
            "message_id": f"old-{i}",
            "payload": "[]",
            "at": now - timedelta(days=8 + i),
        }
        for i in range(3)
    ] + [
        {
            "charger_id": "CP",
            "direction": "in",
            "message_type": 2,
            "action": "Heartbeat",
            "message_id": f"new-{i}",
            "payload": "[]",
            "at": now - timedelta(days=6, hours=i),
        }
        for i in range(2)
    ]
    async with running.system.db.engine.begin() as conn:
        await conn.execute(MESSAGE_LOG.insert(), rows)
        count = (await conn.execute(select(func.count()).select_from(MESSAGE_LOG))).scalar()
    assert count == 5
