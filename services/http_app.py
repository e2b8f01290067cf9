"""The FastAPI application: one app assembled from the routers each package owns."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services import users_api
from services.api_auth import authenticate_invalid
from services.api_params import refuse_unknown_query
from services.body_limit import BodyLimit
from services.bus import Bus
from services.clock import Clock
from services.commands.access import deny_all
from services.commands.contracts import CommandAuthorizer, CommandOrderCheck
from services.committer import GroupCommitter
from services.db import Database
from services.nul_input import refuse_nul
from services.observability.metrics import REGISTRY
from services.problems import install as install_problems
from services.problems import problem_response, problem_responses
from services.registry import ChargerInUse, ChargerKnown
from services.settings import Settings

API_DESCRIPTION = """ChargeOps: O&M backbone of an EV charging network.

Authenticate with `Authorization: Bearer <token>`. Errors are RFC 9457 problem documents
(`application/problem+json`)."""


#: the errors any /api/v1 route may answer, documented once for all of them
API_PROBLEMS = problem_responses(401, 403, 404, 409, 422)

log = logging.getLogger(__name__)


def create_app(
    db: Database,
    bus: Bus,
    routers: Iterable[APIRouter],
    *,
    committer: GroupCommitter,
    clock: Clock,
    settings: Settings | None = None,
    command_authorizer: CommandAuthorizer | None = None,
    command_order_check: CommandOrderCheck | None = None,
    charger_known: ChargerKnown | None = None,
    charger_in_use: ChargerInUse | None = None,
    api: bool = True,
) -> FastAPI:
    """The app. ``settings`` gives the routers their limits (the command timeout is
    ``call_timeout``); ``command_authorizer`` decides whether a technician may send a
    command to a charger (default: never; see :func:`set_command_authorizer`);
    ``command_order_check`` whether a command may name a work order as the one it serves
    (default: any order id); ``charger_known`` whether the registry knows a charger
    (default: unchecked)."""
    app = FastAPI(title="ChargeOps", version="0.1.0", description=API_DESCRIPTION)
    if settings is not None:
        app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
    app.state.db = db
    app.state.bus = bus
    app.state.committer = committer
    app.state.clock = clock
    app.state.settings = settings
    set_command_authorizer(app, command_authorizer or deny_all)
    app.state.command_order_check = command_order_check
    app.state.charger_known = charger_known
    app.state.charger_in_use = charger_in_use
    install_problems(app, authenticate=authenticate_invalid)
    # PostgreSQL cannot store NUL (services.nul_input); a misspelt filter is no filter
    input_checks = [Depends(refuse_nul), Depends(refuse_unknown_query)]
    if api:  # a csms node serves only /healthz, /readyz and /metrics
        app.include_router(users_api.router, responses=API_PROBLEMS, dependencies=input_checks)
    for router in routers:
        app.include_router(router, responses=API_PROBLEMS, dependencies=input_checks)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None, responses=problem_responses(503))
    async def readyz(request: Request) -> Response | dict[str, str]:
        """Readiness: the database and the bus answer, and the process is not stopping."""
        if getattr(request.app.state, "stopping", False):
            return problem_response(
                request, 503, "Not ready", "the process is stopping", checks={"process": "stopping"}
            )
        checks: dict[str, str] = {}
        for name, probe in (("database", db.ping), ("bus", bus.ping)):
            try:
                await probe()
                checks[name] = "ok"
            except Exception as exc:
                # Unauthenticated: the driver's message (host, database, user) goes to the
                # log only.
                log.warning("readiness: %s unavailable: %s: %s", name, type(exc).__name__, exc)
                checks[name] = f"unavailable ({type(exc).__name__})"
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", **checks}
        return problem_response(
            request, 503, "Not ready", "a dependency is unavailable", checks=checks
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def set_command_authorizer(app: FastAPI, authorizer: CommandAuthorizer) -> None:
    """Decide from now on whether a technician may send a command to a charger."""
    app.state.command_authorizer = authorizer
