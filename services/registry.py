"""Whether a charger is in the registry, for the side that does not own it.

csms owns the charger registry; ticketing refuses a work order for a charger nobody
registered. The check is injected into the HTTP app (``create_app(charger_known=...)``)
so that neither package imports the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

#: charger id -> whether the registry knows it
ChargerKnown = Callable[[str], Awaitable[bool]]
