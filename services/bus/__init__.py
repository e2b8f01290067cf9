"""The internal bus: durable, at-least-once delivery of events (csms -> ticketing).

``create_bus(url, ...)`` picks the backend from ``CHARGEOPS_BUS_URL``: ``memory://`` is the
embedded outbox backend. Contracts live in :mod:`services.bus.contracts`.
"""

from services.bus.base import Bus, EventHandler, UnsupportedBusURL, create_bus, record

__all__ = ["Bus", "EventHandler", "UnsupportedBusURL", "create_bus", "record"]
