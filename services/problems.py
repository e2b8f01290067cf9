"""RFC 9457 problem details for every HTTP error the API returns."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document, as the API answers every error (for OpenAPI)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    instance: str | None = None
    detail: str | None = None


_DESCRIPTIONS = {
    401: "no valid bearer token (`WWW-Authenticate: Bearer`)",
    403: "the token's role may not do this",
    404: "no such resource",
    409: "conflicts with the current state",
    422: "invalid input (`errors` lists the fields)",
    503: "a dependency is unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses, each a problem+json document."""
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {
        status: {
            "model": ProblemDetails,  # registers the schema in components
            "description": _DESCRIPTIONS.get(status, "error"),
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in statuses
    }


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.headers = headers
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str = "",
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _answer(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(
        request, exc.status, exc.title, exc.detail, exc.type, exc.headers, **exc.extra
    )


def _invalid_detail(errors: list[Any]) -> str:
    for e in errors:
        if e.get("type") == "json_invalid":  # FastAPI's loc is ("body", character offset)
            loc = tuple(e.get("loc", ()))
            position = loc[-1] if len(loc) > 1 else "?"
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            return f"the request body is not valid JSON ({reason} at position {position})"
    fields = (".".join(str(p) for p in e.get("loc", ())) for e in errors)
    return "invalid fields: " + ", ".join(fields)


def _unreadable_json(exc: StarletteHTTPException) -> str:
    """The detail for a JSON body FastAPI could not decode other than by a syntax error
    (its 400 'There was an error parsing the body', which also came before the 401)."""
    cause = exc.__cause__
    if exc.status_code != 400:
        return ""
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not valid JSON (not UTF-8 at position {cause.start})"
    if isinstance(cause, RecursionError):
        return "the request body is not valid JSON (nested too deeply)"
    return ""


#: the methods a 405's Allow may list
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(request: Request) -> str:
    """Every method some route accepts on this path (Starlette names only the first
    matching route's: POST for /api/v1/chargers though GET is there too).

    Decision: ask each top-level route whether it fully matches the request under each
    method (``BaseRoute.matches``) rather than walking routes by type: included routers
    are their own route objects in newer FastAPI."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


def _problem_json_only(app: FastAPI) -> None:
    """Error responses documented with ``problem_responses`` are problem+json only.

    Decision: their ``model`` is what registers ``ProblemDetails`` in the components, but
    FastAPI also lists it under the route's own media type (application/json), which the
    API never answers an error with; drop that entry from the generated document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    if PROBLEM_JSON in content:
                        content.pop("application/json", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(
    app: FastAPI, *, authenticate: Callable[[Request], Awaitable[object]] | None = None
) -> None:
    """Answer every error with a problem document. ``authenticate`` raises the route's 401
    (a ``Problem``) for a request whose input failed validation before its dependencies
    ran: FastAPI parses the body first, so without it a bad body would be a 422 to anyone."""

    _problem_json_only(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return _answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if authenticate is not None:
            try:
                await authenticate(request)
            except Problem as refused:
                return _answer(request, refused)
        raw = list(exc.errors())
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in raw
        ]
        detail = _invalid_detail(raw)
        return problem_response(request, 422, "Request validation failed", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = _unreadable_json(exc)
        if unreadable:  # as a body that is not JSON: the route's 401/403 first, then 422
            if authenticate is not None:
                try:
                    await authenticate(request)
                except Problem as refused:
                    return _answer(request, refused)
            return problem_response(request, 422, "Request validation failed", unreadable)
        title = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict",
        }.get(exc.status_code, "HTTP error")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return problem_response(request, exc.status_code, title, str(exc.detail), headers=headers)

    # Decision: Starlette's ServerErrorMiddleware calls the handler registered for Exception,
    # so an unexpected error is a problem document too; its detail names no exception or
    # internals (the traceback goes to the log only). The middleware then re-raises, so
    # uvicorn also logs it.
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error answering %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request, 500, "Internal Server Error", "the server failed to answer this request"
        )
