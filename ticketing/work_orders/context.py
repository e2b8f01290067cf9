"""What a work-order operation needs besides the connection: time, actor, config, bus.

Operations run inside the group-commit transaction and may be executed twice (a failed
batch is retried write set by write set), so they never touch the world outside the
database directly: metrics and other after-effects go to ``after_commit`` and run once
the transaction is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.bus import Bus
from services.settings import Settings


@dataclass(frozen=True)
class Thresholds:
    """Derived-fault thresholds (from settings)."""

    offline_after_s: float = 900.0
    reboot_loop_boots: int = 3
    reboot_loop_window_s: float = 3600.0
    flapping_changes: int = 6
    flapping_window_s: float = 3600.0
    site_down_fraction: float = 0.6
    site_down_min_chargers: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            offline_after_s=settings.offline_order_after,
            reboot_loop_boots=settings.reboot_loop_boots,
            reboot_loop_window_s=settings.reboot_loop_window,
            flapping_changes=settings.flapping_changes,
            flapping_window_s=settings.flapping_window,
            site_down_fraction=settings.site_down_fraction,
            site_down_min_chargers=settings.site_down_min_chargers,
        )


@dataclass
class OpContext:
    now: datetime
    actor: str
    bus: Bus | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def later(self, effect: Callable[[], None]) -> None:
        self.after_commit.append(effect)

    def as_actor(self, actor: str) -> OpContext:
        """The same context (shared after-effects) acting as ``actor``."""
        return replace(self, actor=actor)

    def run_after_commit(self) -> None:
        effects, self.after_commit[:] = list(self.after_commit), []
        for effect in effects:
            effect()
