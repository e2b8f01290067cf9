"""The background WAL checkpointer copies committed pages back while the writer goes on."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from csms.state import MESSAGE_LOG, log_row
from services.checkpoint import WalCheckpointer
from services.committer import GroupCommitter, WriteSet
from services.db import Database
from services.observability.metrics import REGISTRY

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def row(n: int) -> dict[str, object]:
    return log_row("CP", "in", 2, "Heartbeat", f"m{n}", '[2,"m","Heartbeat",{}]' + " " * 200, AT)


async def test_checkpoint_empties_the_wal_into_the_database(
    sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "chargeops.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    engine = db.writer_engine()
    assert engine is not None
    checkpointer = WalCheckpointer(engine)
    committer = GroupCommitter(db.engine, sync_engine=db.writer_engine())
    committer.start()
    try:
        for start in range(0, 2000, 200):
            writes = WriteSet()
            for n in range(start, start + 200):
                writes.insert(MESSAGE_LOG, row(n))
            await committer.commit(writes)
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 0
        busy, pages, done = await checkpointer.run_once()
        assert busy == 0
        assert pages > 0
        assert done == pages  # nobody reading an older snapshot: everything copied back
        assert REGISTRY.get_sample_value("chargeops_db_wal_pages") == pages
        async with db.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(MESSAGE_LOG))).scalar()
        assert count == 2000
        # the writer goes on after a checkpoint (the WAL restarts from its beginning)
        await committer.commit(WriteSet(inserts=[(MESSAGE_LOG, row(2000))]))
    finally:
        await committer.close()
        checkpointer.close()
        await db.dispose()
