"""Bearer-token authentication of the HTTP API. Tokens are stored as SHA-256 hashes.

``CHARGEOPS_ADMIN_TOKEN`` seeds one admin token on an empty token table; further tokens
are made with ``chargeops token create`` (shown once) and revoked by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Database, UTCDateTime, utcnow
from services.observability import metrics
from services.problems import Problem
from services.security import hash_token, new_api_token

ROLES = ("admin", "dispatcher", "technician", "viewer")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


async def seed_admin_token(db: Database, token: str | None) -> bool:
    """Store ``token`` as the admin token if no token exists yet. True if it did."""
    if not token:
        return False
    async with db.session() as session:
        count = (await session.execute(select(func.count()).select_from(ApiToken))).scalar_one()
        if count:
            return False
        session.add(
            ApiToken(name="admin", token_hash=hash_token(token), role="admin", created_at=utcnow())
        )
        await session.commit()
    return True


async def create_token(db: Database, name: str, role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = new_api_token()
    async with db.session() as session:
        session.add(
            ApiToken(name=name, token_hash=hash_token(token), role=role, created_at=utcnow())
        )
        await session.commit()
    return token


async def revoke_token(db: Database, name: str) -> bool:
    async with db.session() as session:
        row = (await session.execute(select(ApiToken).where(ApiToken.name == name))).scalar()
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        await session.commit()
    return True


def _unauthorized(detail: str, reason: str) -> Problem:
    metrics.HTTP_AUTH_FAILURES.labels(reason).inc()
    return Problem(401, "Unauthorized", detail)


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <token>", "missing")
    db: Database = request.app.state.db
    async with db.session() as session:
        row = (
            await session.execute(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        ).scalar()
    if row is None or row.revoked_at is not None:
        raise _unauthorized("unknown or revoked token", "invalid")
    return Principal(row.name, row.role)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: str) -> object:
    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Problem(403, "Forbidden", f"role {principal.role!r} may not do this")
        return principal

    return Depends(check)


AdminOrDispatcher = Annotated[Principal, require_role("admin", "dispatcher")]
AnyRole = CurrentPrincipal
