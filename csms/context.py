"""What every charger session needs from its process, built once by ``csms.bootstrap``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from services.bus import Bus
from services.committer import GroupCommitter
from services.db import Database, utcnow
from services.settings import Settings

if TYPE_CHECKING:
    from csms.presence import Presence


@dataclass
class CsmsContext:
    settings: Settings
    db: Database
    committer: GroupCommitter
    bus: Bus
    clock: Callable[[], datetime] = field(default=utcnow)
    presence: Presence | None = None

    @property
    def node_id(self) -> str:
        return self.settings.node_id
