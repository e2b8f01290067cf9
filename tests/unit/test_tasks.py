"""The periodic task runs its job at once and again after each interval, survives a
failing run and stops cleanly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.tasks import PeriodicTask


async def test_runs_repeatedly_logs_failures_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")

    periodic = PeriodicTask(
        job, 0.001, name="test-periodic", logger=logging.getLogger("test"), failure="job failed"
    )
    periodic.start()
    periodic.start()  # idempotent
    for _ in range(200):
        if runs >= 3:
            break
        await asyncio.sleep(0.005)
    await periodic.stop()
    stopped_at = runs
    await asyncio.sleep(0.01)
    assert stopped_at >= 3
    assert runs == stopped_at
    assert [r.getMessage() for r in caplog.records if r.name == "test"] == ["job failed"]
    await periodic.stop()  # stopping twice is harmless
