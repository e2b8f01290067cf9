"""NUL characters (U+0000) are refused in every input of the HTTP API.

Decision: PostgreSQL cannot store NUL in text, so a NUL reaching a query was a driver error
answered as a 500 there (``invalid byte sequence for encoding "UTF8": 0x00``) while SQLite
stored it; no id, name or note of ours has a use for it. One dependency of every /api/v1
router checks the path and query parameters and the JSON body (where a NUL can only be the
escape ``\\u0000``) and raises the validation error FastAPI would, so the answer is the
usual 422 naming the field, after the 401/403 checks of ``services.problems.install``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError

_NUL = "\x00"
#: ``\u0000`` escaped in JSON: preceded by an even number of backslashes (none included)
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _error(loc: tuple[str | int, ...]) -> dict[str, Any]:
    return {"loc": loc, "msg": "must not contain NUL characters (U+0000)", "type": "string_nul"}


def _in_json(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        if _NUL in value:
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if _NUL in key:
                yield loc
            else:
                yield from _in_json(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _in_json(item, (*loc, index))


async def refuse_nul(request: Request) -> None:
    """422 for a NUL in a path or query parameter or anywhere in the JSON body."""
    locs: list[tuple[str | int, ...]] = [
        ("path", name) for name, value in request.path_params.items() if _NUL in str(value)
    ]
    locs += [("query", name) for name, value in request.query_params.multi_items() if _NUL in value]
    body = await request.body()  # already read (and cached) by FastAPI for a body route
    if _ESCAPED_NUL.search(body):
        try:
            locs += _in_json(orjson.loads(body), ("body",))
        except orjson.JSONDecodeError:
            pass  # not JSON: the route's own validation says so
    if locs:
        raise RequestValidationError([_error(loc) for loc in dict.fromkeys(locs)])
