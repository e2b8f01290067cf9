"""SQLite WAL checkpoints off the commit path.

Decision (measured, tests/bench/README.md): with SQLite's automatic checkpoints the
commit that crosses the threshold copies the whole WAL back into the database file and
fsyncs it while every charger in that batch waits for its answer; checkpointing rarely
(to copy hot pages once) made those stalls the p99. Here a separate connection on its
own thread runs a PASSIVE checkpoint every ``interval`` seconds: it neither blocks nor
waits for the writer, and the writer's automatic checkpoint is only the fallback for a
checkpointer that falls far behind (``FALLBACK_PAGES`` in ``services.db``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine

from services.observability import metrics


class WalCheckpointer:
    def __init__(self, engine: Engine) -> None:
        """``engine``: a synchronous engine on the SQLite file (its own connection)."""
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-checkpoint")

    async def run_once(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, WAL pages, pages checkpointed)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._checkpoint)

    def _checkpoint(self) -> tuple[int, int, int]:
        started = time.perf_counter()
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        busy, pages, done = int(row[0]), int(row[1]), int(row[2])
        metrics.CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
        metrics.WAL_PAGES.set(max(pages, 0))
        return busy, pages, done

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._engine.dispose()
