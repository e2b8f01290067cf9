"""Bounds on the integers the HTTP API takes from a request (ids, offsets, cursors).

Decision: every integer that reaches a query is bounded by the column it is compared with,
so an out-of-range value is a 422 problem here instead of a driver error (asyncpg's
"out of int32 range", SQLite's "Python int too large") answered as a 500. Path ids over
the bound are 422 as well, like any other invalid path parameter.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query

from services.problems import Problem

#: ``Integer`` keys (teams, technicians, webhooks, fault rules, SLA policies)
INT32_MAX = 2**31 - 1
#: ``BigInteger`` keys and sequences (work orders, deliveries, log rows, events); OFFSET
INT64_MAX = 2**63 - 1

Offset = Annotated[int, Query(ge=0, le=INT64_MAX)]
#: a path id of an ``Integer`` key / of a ``BigInteger`` key
SmallId = Annotated[int, Path(ge=1, le=INT32_MAX)]
BigId = Annotated[int, Path(ge=1, le=INT64_MAX)]

_CURSOR = re.compile(r"[0-9]{1,19}")


def cursor(value: str | None) -> int | None:
    """A ``next_cursor`` as the row id it stands for (422 unless ASCII digits <= INT64_MAX)."""
    if value is None:
        return None
    if not _CURSOR.fullmatch(value) or int(value) > INT64_MAX:
        raise Problem(422, "Request validation failed", "cursor must be a next_cursor value")
    return int(value)
