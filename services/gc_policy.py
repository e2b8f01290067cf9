"""Garbage-collector policy for a process holding thousands of long-lived connections.

Measured here (tests/bench/fault_latency.py, 1,000 connections): CPython's automatic full
collections scanned ~125k tracked objects and paused the event loop for 140-200 ms, which
was the whole p99 of fault acknowledgement. The scan grows with the number of connections
(about 2.5 s at 20,000). Policy:

* soon after the population of long-lived objects grows (``population()``, e.g. connected
  chargers, up by 2% or 20), and at least every ``freeze_every`` seconds, collect the young
  generations (cheap) and ``gc.freeze()`` the survivors: long-lived objects leave the
  scanned generations, so automatic collections only ever look at recent objects;
* cyclic garbage formed later among frozen objects (e.g. a closed connection's objects) is
  reclaimed by a full ``unfreeze -> collect -> freeze`` every ``full_every`` seconds; its
  pause is logged and exported as a metric so an operator can pick a quiet hour.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from services.observability import metrics
from services.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class GcPolicy:
    def __init__(
        self,
        population: Callable[[], int] = lambda: 0,
        *,
        freeze_every: float = 30.0,
        full_every: float = 6 * 3600.0,
        check_every: float = 1.0,
    ) -> None:
        self.population = population
        self.freeze_every = freeze_every
        self.full_every = full_every
        self.check_every = check_every
        self._task: asyncio.Task[None] | None = None
        self._frozen_population = 0

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._run(), name="gc-policy")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def freeze_young(self) -> None:
        gc.collect(1)
        gc.freeze()
        self._frozen_population = self.population()
        metrics.GC_FROZEN.set(gc.get_freeze_count())

    def _grown(self) -> bool:
        now, then = self.population(), self._frozen_population
        return now - then >= max(20, then // 50)

    def full_collection(self) -> float:
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        pause = time.perf_counter() - started
        metrics.GC_FULL_SECONDS.observe(pause)
        metrics.GC_FROZEN.set(gc.get_freeze_count())
        log.info("full garbage collection: %d objects freed, %.0f ms", collected, pause * 1000)
        return pause

    async def _run(self) -> None:
        last_full = last_freeze = time.monotonic()
        while True:
            await asyncio.sleep(self.check_every)
            now = time.monotonic()
            if now - last_full >= self.full_every:
                self.full_collection()
                last_full = last_freeze = time.monotonic()
            elif self._grown() or now - last_freeze >= self.freeze_every:
                self.freeze_young()
                last_freeze = time.monotonic()
