"""Domain transactions: a synchronous operation on a Connection, run in the group commit.

Decision: every ticketing write is a plain function ``op(conn) -> T`` executed inside
the process's group-committer transaction (on SQLite, the single writer thread; on
PostgreSQL, the asyncpg connection through ``run_sync``). Reads and writes of one
decision (find the open order, append an occurrence) then happen atomically, without
a second writer competing with the OCPP hot path for SQLite's lock.

An op may raise :class:`DomainError` (a 4xx answer) **only before it writes**: the
error is handed back as a value so the rest of the batch commits, and the caller
re-raises it. Any other exception fails the write set (the committer retries the batch
one write set at a time, so other callers lose nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from services.committer import GroupCommitter, WriteSet
from services.problems import Problem

T = TypeVar("T")


class DomainError(Problem):
    """A request the domain refuses; raised from a route it is the HTTP problem answer."""

    code = 400
    name = "Bad Request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(self.code, self.name, detail, **extra)


class Forbidden(DomainError):
    code = 403
    name = "Forbidden"


class NotFound(DomainError):
    code = 404
    name = "Not Found"


class Conflict(DomainError):
    code = 409
    name = "Conflict"


class Invalid(DomainError):
    code = 422
    name = "Unprocessable Content"


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: DomainError) -> None:
        self.error = error


def _guarded(op: Callable[[Connection], T]) -> Callable[[Connection], T | _Failed]:
    def run(conn: Connection) -> T | _Failed:
        try:
            return op(conn)
        except DomainError as exc:
            return _Failed(exc)

    return run


async def transact(
    committer: GroupCommitter, op: Callable[[Connection], T], *, background: bool = False
) -> T:
    """Run ``op`` in a group-committed transaction; returns once it is durable.
    ``background``: see :meth:`GroupCommitter.commit` (for bus consumers' work)."""
    writes = WriteSet()
    writes.then(_guarded(op))
    (result,) = await committer.commit(writes, background=background)
    if isinstance(result, _Failed):
        raise result.error
    return result  # type: ignore[no-any-return]
