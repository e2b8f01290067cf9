"""Deterministic event ids, for events a charger may cause twice (retries with new ids)."""

from __future__ import annotations

import uuid

EVENT_NAMESPACE = uuid.UUID("5b0e1f5c-9c0a-4f57-9a43-6a2f2f0c0c0d")


def stable_event_id(*parts: object) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, "|".join(str(p) for p in parts)))
