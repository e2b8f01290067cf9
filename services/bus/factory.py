"""``create_bus``: the backend named by ``CHARGEOPS_BUS_URL``.

``memory://`` is the embedded outbox bus; ``nats://host:port[,host:port...][?options]``
the NATS JetStream bus (options: :mod:`services.bus.nats_url`).
"""

from __future__ import annotations

from services.bus.base import Bus, UnsupportedBusURL
from services.bus.nats import NatsBus
from services.bus.nats_url import parse_nats_url
from services.bus.outbox import OutboxBus
from services.committer import GroupCommitter


def create_bus(url: str, committer: GroupCommitter) -> Bus:
    if url.startswith("memory://"):
        return OutboxBus(committer)
    if url.startswith("nats://"):
        return NatsBus(parse_nats_url(url), committer)
    raise UnsupportedBusURL(
        f"unsupported CHARGEOPS_BUS_URL {url!r}: use memory:// or nats://host:port"
    )
