"""``CHARGEOPS_BUS_URL=nats://...``: servers and stream options of the NATS bus.

``nats://[user:password@]host:port[,host:port...][?option=value&...]``. Options (all
optional): ``stream`` (JetStream stream name, default ``CHARGEOPS_EVENTS``), ``prefix``
(subject prefix, default ``chargeops``), ``replicas`` (stream replicas, default 1),
``max_age`` (seconds events are kept, default 7 days), ``dedup_window`` (seconds within
which a repeated event id is dropped, default 120), ``max_attempts`` (deliveries before a
failing event is dead-lettered, default 8), ``ack_wait`` (seconds a delivered event may
stay unacknowledged before it is redelivered, default 30), ``connect_wait`` (seconds a
process starting waits for a first connection before it gives up, default 30). An unknown
option is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from services.bus.base import UnsupportedBusURL
from services.bus.nats_subjects import PREFIX_PATTERN, STREAM_PATTERN

DAY = 86400.0


@dataclass(frozen=True)
class NatsOptions:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "CHARGEOPS_EVENTS"
    prefix: str = "chargeops"
    replicas: int = 1
    max_age: float = 7 * DAY
    dedup_window: float = 120.0
    max_attempts: int = 8
    ack_wait: float = 30.0
    connect_wait: float = 30.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise UnsupportedBusURL("a nats:// bus URL needs at least one host")
        if not STREAM_PATTERN.match(self.stream):
            raise UnsupportedBusURL(f"invalid stream name {self.stream!r} ([A-Za-z0-9_-])")
        if not PREFIX_PATTERN.match(self.prefix):
            raise UnsupportedBusURL(f"invalid subject prefix {self.prefix!r}")
        if not 1 <= self.replicas <= 5:
            raise UnsupportedBusURL("replicas must be between 1 and 5")
        if min(self.max_age, self.dedup_window, self.ack_wait, self.connect_wait) <= 0:
            raise UnsupportedBusURL(
                "max_age, dedup_window, ack_wait and connect_wait must be positive"
            )
        if self.dedup_window > self.max_age:
            raise UnsupportedBusURL("dedup_window cannot exceed max_age")
        if self.max_attempts < 1:
            raise UnsupportedBusURL("max_attempts must be at least 1")


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "stream": str,
    "prefix": str,
    "replicas": int,
    "max_age": float,
    "dedup_window": float,
    "max_attempts": int,
    "ack_wait": float,
    "connect_wait": float,
}


def parse_nats_url(url: str) -> NatsOptions:
    parts = urlsplit(url)
    if parts.scheme != "nats":
        raise UnsupportedBusURL(f"not a nats:// URL: {url!r}")
    hosts = [h for h in parts.netloc.split(",") if h]
    if not hosts:
        raise UnsupportedBusURL(f"no host in {url!r}")
    values: dict[str, Any] = {"servers": tuple(f"nats://{h}" for h in hosts)}
    for key, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        convert = _CONVERTERS.get(key)
        if convert is None:
            raise UnsupportedBusURL(f"unknown option {key!r} in the bus URL")
        try:
            values[key] = convert(raw)
        except ValueError:
            raise UnsupportedBusURL(f"bus URL option {key}={raw!r} is not valid") from None
    return NatsOptions(**values)
