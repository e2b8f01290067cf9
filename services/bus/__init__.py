"""The internal bus: durable, at-least-once delivery of events (csms -> ticketing).

``create_bus(url, ...)`` picks the backend from ``CHARGEOPS_BUS_URL``: ``memory://`` is the
embedded outbox backend, ``nats://...`` the NATS JetStream backend. Contracts live in
:mod:`services.bus.contracts`.
"""

from services.bus.base import Bus, EventHandler, UnsupportedBusURL, record
from services.bus.factory import create_bus

__all__ = ["Bus", "EventHandler", "UnsupportedBusURL", "create_bus", "record"]
