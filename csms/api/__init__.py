"""HTTP routers owned by csms: chargers, id tokens, live state, message log, commands."""

from fastapi import APIRouter

from csms.api import chargers, commands, id_tokens


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    api.include_router(chargers.router)
    api.include_router(commands.router)
    api.include_router(id_tokens.router)
    return api
