"""NATS subject and JetStream names of the bus, and the token encoding they rely on.

Subjects (``<prefix>`` defaults to ``chargeops``):
- ``<prefix>.events.<Type>``: events, captured by the stream;
- ``<prefix>.dead.<consumer>``: dead letters (original payload + error headers), captured
  by the same stream so they are kept as long as events are;
- ``<prefix>.commands.<charger>``: command requests (core NATS request/reply).

Decision: charger ids and consumer names are free text (``ticketing.work-orders``, a
charger called ``CP 1.2``), but a subject token may not contain ``.``, whitespace or be
``*``/``>``, and a durable name may not contain ``.``, ``*``, ``>``, ``/``, ``\\`` or
whitespace. :func:`encode_token` keeps ``[A-Za-z0-9-]`` and writes every other UTF-8 byte
as ``_XX`` (``_`` itself too), so the encoding is injective, reversible
(:func:`decode_token`) and readable for ordinary ids. Not ``%XX``: NATS 2.9 formats a
consumer's name into its acknowledgement subjects as a Go format string, so a ``%`` in a
durable name garbles every delivery (the client drops the connection on it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPE = re.compile(r"_([0-9A-F]{2})")
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
STREAM_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def encode_token(text: str) -> str:
    """``text`` as one subject token / JetStream name (never empty, never a wildcard)."""
    if not text:
        raise ValueError("an empty name cannot be a subject token")
    return "".join(chr(b) if b in _SAFE else f"_{b:02X}" for b in text.encode())


def decode_token(token: str) -> str:
    """The inverse of :func:`encode_token`; raises ``ValueError`` for anything it cannot
    have produced."""
    text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), token)
    try:
        decoded = text.encode("latin-1").decode()
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ValueError(f"not an encoded token: {token!r}") from None
    if not decoded or encode_token(decoded) != token:
        raise ValueError(f"not an encoded token: {token!r}")
    return decoded


@dataclass(frozen=True)
class Subjects:
    prefix: str = "chargeops"

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"invalid subject prefix {self.prefix!r}")

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.events.>"

    @property
    def all_dead(self) -> str:
        return f"{self.prefix}.dead.>"

    def event(self, type_: str) -> str:
        return f"{self.prefix}.events.{encode_token(type_)}"

    def event_type(self, subject: str) -> str:
        """The event type a subject of :meth:`event` names."""
        return decode_token(subject.rsplit(".", 1)[-1])

    def dead(self, consumer: str) -> str:
        return f"{self.prefix}.dead.{encode_token(consumer)}"

    def command(self, charger_id: str) -> str:
        return f"{self.prefix}.commands.{encode_token(charger_id)}"


def durable_name(consumer: str) -> str:
    """The JetStream durable consumer name of a bus consumer."""
    return encode_token(consumer)
