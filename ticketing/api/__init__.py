"""HTTP routers owned by ticketing."""

from fastapi import APIRouter

from ticketing.api import faults


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    api.include_router(faults.router)
    return api
