"""Questions about a charger that one side asks of the other.

csms owns the charger registry; ticketing refuses a work order for a charger nobody
registered (``ChargerKnown``), and csms refuses to delete a charger that ticketing still has
open work orders for (``ChargerInUse``). The checks are injected into the HTTP app
(``create_app(charger_known=..., charger_in_use=...)``) so that neither package imports
the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

#: charger id -> whether the registry knows it
ChargerKnown = Callable[[str], Awaitable[bool]]
#: charger id -> why it may not be removed from the registry (None: it may)
ChargerInUse = Callable[[str], Awaitable[str | None]]
