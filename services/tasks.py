"""Small helpers for the background tasks every component runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class PeriodicTask:
    """Runs ``job`` now and then every ``interval`` seconds in a background task.

    A failing run is logged (``failure``, on ``logger``) and the loop goes on; ``start``
    is idempotent and ``stop`` cancels the run in progress and waits for it."""

    def __init__(
        self,
        job: Callable[[], Awaitable[object]],
        interval: float,
        *,
        name: str,
        logger: logging.Logger,
        failure: str,
    ) -> None:
        self.job = job
        self.interval = interval
        self.name = name
        self.logger = logger
        self.failure = failure
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.job()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.logger.exception(self.failure)
            await asyncio.sleep(self.interval)
