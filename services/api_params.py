"""Bounds on the integers and datetimes the HTTP API takes from a request (ids, offsets,
cursors, stored datetimes).

Decision: every integer that reaches a query is bounded by the column it is compared with,
so an out-of-range value is a 422 problem here instead of a driver error (asyncpg's
"out of int32 range", SQLite's "Python int too large") answered as a 500. Path ids over
the bound are 422 as well, like any other invalid path parameter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AfterValidator, AwareDatetime

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


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise ValueError("out of range in UTC (years 1 to 9999)") from None


#: a datetime with a zone that is stored: converted to UTC here, so one out of range there
#: is a 422 instead of an OverflowError of the database column's conversion (a 500)
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route's dependant (and its sub-dependencies) declares."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


#: the attribute of a route that caches its query parameter names
_DECLARED = "_chargeops_query_names"


async def refuse_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take.

    Decision: a misspelt filter (``?stat=open`` for ``?state=open``) used to be ignored and
    answered with the unfiltered list, which an operator takes for the filtered one; bodies
    already refuse unknown fields, and so does the query string now."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared: frozenset[str] | None = getattr(route, _DECLARED, None)
    if declared is None:
        declared = frozenset(_query_names(route.dependant))
        setattr(route, _DECLARED, declared)
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in declared]
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter (this route takes: {takes})",
                    "type": "query_unknown",
                }
                for name in unknown
            ]
        )
