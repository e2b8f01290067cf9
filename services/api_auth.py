"""Bearer-token authentication of the HTTP API, and its users, roles and tokens.

A user (``api_users``) has one role; a token (``api_tokens``) belongs to a user and is named
``user/label``. A token's effective role is its user's, so a role change or a disabled user
applies to every token of that user at once. Tokens made before users existed have no user:
they keep their own ``role`` column and their name stands for the user ("legacy" tokens).

Decisions:
- Each request resolves its token with one query joining token -> user and no cache, so a
  revoked token or a disabled user is refused on the next request, on every replica.
- Tokens are 32 random bytes kept only as SHA-256 hashes (``services.security``); the plain
  token is returned once, when issued, and never logged.
- ``CHARGEOPS_ADMIN_TOKEN`` seeds user ``admin`` and token ``admin/bootstrap`` on an empty
  token table. Demoting or disabling the last enabled admin is refused (best effort, not
  serialised); ``chargeops user create NAME --role admin`` is the way back in regardless.

Errors (``UserError`` and subclasses, translated to HTTP only by ``services.users_api``):
``InvalidName``/``InvalidRole`` (bad input), ``UnknownUser``, ``DuplicateUser``,
``DuplicateToken``, ``UserDisabled`` (no tokens for a disabled user), ``LastAdmin``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, get_args

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Integer, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Database, UTCDateTime, utcnow
from services.observability import metrics
from services.problems import Problem
from services.security import hash_token, new_api_token

Role = Literal["admin", "dispatcher", "technician", "viewer"]
ROLES: tuple[str, ...] = get_args(Role)
#: user names and token labels
SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
TOKEN_NAME_MAX = 100
SEED_USER = "admin"
SEED_TOKEN = f"{SEED_USER}/bootstrap"


class ApiUser(Base):
    """A person or system using the API; its role applies to all of its tokens."""

    __tablename__ = "api_users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token, by hash. ``role`` is authoritative only when ``user_name`` is None."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: the owning user (tokens made before users existed have none: their name is the user)
    user_name: Mapped[str | None] = mapped_column(String(100), index=True)


# ------------------------------------------------------------------ errors and views
class UserError(Exception):
    """Base of the user and token management errors."""


class InvalidName(UserError, ValueError):
    pass


class InvalidRole(UserError, ValueError):
    pass


class UnknownUser(UserError, LookupError):
    pass


class DuplicateUser(UserError):
    pass


class DuplicateToken(UserError):
    pass


class UserDisabled(UserError):
    pass


class LastAdmin(UserError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user name, its effective role, and the token used."""

    name: str
    role: str
    token_name: str = ""


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class LegacyTokenInfo:
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None
    tokens: tuple[TokenInfo, ...]


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidRole(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def _check_slug(what: str, value: str) -> None:
    if not SLUG.fullmatch(value):
        raise InvalidName(f"{what} {value!r} must match {SLUG.pattern}")


# ------------------------------------------------------------------ users
async def _tokens_of(session: AsyncSession, names: list[str]) -> dict[str, list[TokenInfo]]:
    rows = await session.execute(
        select(ApiToken.user_name, ApiToken.name, ApiToken.created_at, ApiToken.revoked_at)
        .where(ApiToken.user_name.in_(names))
        .order_by(ApiToken.created_at, ApiToken.id)
    )
    tokens: dict[str, list[TokenInfo]] = {}
    for user_name, name, created_at, revoked_at in rows:
        if user_name is not None:
            tokens.setdefault(user_name, []).append(TokenInfo(name, created_at, revoked_at))
    return tokens


async def _info(session: AsyncSession, users: list[ApiUser]) -> list[UserInfo]:
    tokens = await _tokens_of(session, [u.name for u in users])
    return [
        UserInfo(u.name, u.role, u.created_at, u.disabled_at, tuple(tokens.get(u.name, ())))
        for u in users
    ]


async def _user(session: AsyncSession, name: str) -> ApiUser:
    user = await session.get(ApiUser, name)
    if user is None:
        raise UnknownUser(f"no user {name!r}")
    return user


async def list_users(db: Database) -> list[UserInfo]:
    async with db.session() as session:
        users = list((await session.execute(select(ApiUser).order_by(ApiUser.name))).scalars())
        return await _info(session, users)


async def get_user(db: Database, name: str) -> UserInfo:
    async with db.session() as session:
        return (await _info(session, [await _user(session, name)]))[0]


async def legacy_tokens(db: Database) -> list[LegacyTokenInfo]:
    """Tokens made before users existed (no user; their own role applies)."""
    async with db.session() as session:
        rows = await session.execute(
            select(ApiToken.name, ApiToken.role, ApiToken.created_at, ApiToken.revoked_at)
            .where(ApiToken.user_name.is_(None))
            .order_by(ApiToken.name)
        )
        return [LegacyTokenInfo(*row) for row in rows]


async def create_user(db: Database, name: str, role: str) -> UserInfo:
    _check_slug("user name", name)
    _check_role(role)
    async with db.session() as session:
        if await session.get(ApiUser, name) is not None:
            raise DuplicateUser(f"user {name!r} already exists")
        user = ApiUser(name=name, role=role, created_at=utcnow(), disabled_at=None)
        session.add(user)
        try:
            await session.commit()
        except IntegrityError as exc:
            raise DuplicateUser(f"user {name!r} already exists") from exc
    return UserInfo(user.name, user.role, user.created_at, None, ())


async def _other_admins(session: AsyncSession, name: str) -> int:
    users = await session.execute(
        select(func.count())
        .select_from(ApiUser)
        .where(ApiUser.role == "admin", ApiUser.disabled_at.is_(None), ApiUser.name != name)
    )
    legacy = await session.execute(
        select(func.count())
        .select_from(ApiToken)
        .where(
            ApiToken.user_name.is_(None), ApiToken.role == "admin", ApiToken.revoked_at.is_(None)
        )
    )
    return int(users.scalar_one()) + int(legacy.scalar_one())


async def update_user(
    db: Database, name: str, *, role: str | None = None, disabled: bool | None = None
) -> UserInfo:
    """Change a user's role and/or disable (or re-enable) it, in one transaction."""
    if role is not None:
        _check_role(role)
    async with db.session() as session:
        user = await _user(session, name)
        was_admin = user.role == "admin" and user.disabled_at is None
        if role is not None:
            user.role = role
        if disabled is not None and disabled != (user.disabled_at is not None):
            user.disabled_at = utcnow() if disabled else None
        still_admin = user.role == "admin" and user.disabled_at is None
        if was_admin and not still_admin and not await _other_admins(session, name):
            raise LastAdmin(f"{name!r} is the last enabled admin")
        await session.commit()
        return (await _info(session, [user]))[0]


async def set_role(db: Database, name: str, role: str) -> UserInfo:
    return await update_user(db, name, role=role)


async def disable_user(db: Database, name: str) -> UserInfo:
    """Disable a user: every one of its tokens is refused from the next request on."""
    return await update_user(db, name, disabled=True)


async def enable_user(db: Database, name: str) -> UserInfo:
    return await update_user(db, name, disabled=False)


# ------------------------------------------------------------------ tokens
def _new_token(name: str, role: str, user_name: str) -> tuple[ApiToken, str]:
    token = new_api_token()
    row = ApiToken(
        name=name,
        token_hash=hash_token(token),
        role=role,
        created_at=utcnow(),
        revoked_at=None,
        user_name=user_name,
    )
    return row, token


async def issue_token(db: Database, user_name: str, label: str) -> tuple[str, str]:
    """A new token ``user/label`` for an enabled user: (token name, token). Shown once."""
    _check_slug("token label", label)
    token_name = f"{user_name}/{label}"
    if len(token_name) > TOKEN_NAME_MAX:
        raise InvalidName(f"token name {token_name!r} is longer than {TOKEN_NAME_MAX}")
    async with db.session() as session:
        user = await _user(session, user_name)
        if user.disabled_at is not None:
            raise UserDisabled(f"user {user_name!r} is disabled")
        taken = await session.execute(select(ApiToken.id).where(ApiToken.name == token_name))
        if taken.first() is not None:
            raise DuplicateToken(f"token {token_name!r} already exists")
        row, token = _new_token(token_name, user.role, user.name)
        session.add(row)
        try:
            await session.commit()
        except IntegrityError as exc:
            raise DuplicateToken(f"token {token_name!r} already exists") from exc
    return token_name, token


async def revoke_token(db: Database, token_name: str) -> bool:
    """Revoke a token by name. False if there is no such token or it was already revoked."""
    async with db.session() as session:
        row = (await session.execute(select(ApiToken).where(ApiToken.name == token_name))).scalar()
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        await session.commit()
    return True


async def create_token(db: Database, name: str, role: str) -> str:
    """Create (or reuse) user ``name`` with ``role`` and issue it a token ``name/tokenN``.

    Reusing a user with another role is refused rather than silently changing its role.
    """
    _check_slug("user name", name)
    _check_role(role)
    try:
        user = await create_user(db, name, role)
    except DuplicateUser:
        user = await get_user(db, name)
        if user.role != role:
            raise DuplicateUser(f"user {name!r} exists with role {user.role!r}") from None
    taken = {t.name for t in user.tokens}
    label = next(f"token{n}" for n in range(1, len(taken) + 2) if f"{name}/token{n}" not in taken)
    _, token = await issue_token(db, name, label)
    return token


async def seed_admin_token(db: Database, token: str | None) -> bool:
    """On an empty token table, make ``token`` the token ``admin/bootstrap`` of an enabled
    admin user ``admin``. True if it did (False also when a concurrent start won the race)."""
    if not token:
        return False
    async with db.session() as session:
        count = (await session.execute(select(func.count()).select_from(ApiToken))).scalar_one()
        if count:
            return False
        now = utcnow()
        user = await session.get(ApiUser, SEED_USER)
        if user is None:
            session.add(ApiUser(name=SEED_USER, role="admin", created_at=now, disabled_at=None))
        else:
            user.role, user.disabled_at = "admin", None
        session.add(
            ApiToken(
                name=SEED_TOKEN,
                token_hash=hash_token(token),
                role="admin",
                created_at=now,
                user_name=SEED_USER,
            )
        )
        try:
            await session.commit()
        except IntegrityError:
            return False
    return True


# ------------------------------------------------------------------ authentication
class AuthFailure(Exception):
    """A token that does not authenticate; ``reason`` is the metric label."""

    def __init__(self, reason: Literal["invalid", "revoked", "disabled"]) -> None:
        super().__init__(reason)
        self.reason = reason


def _principal(
    token_name: str,
    token_role: str,
    user_name: str | None,
    revoked_at: datetime | None,
    user_role: str | None,
    disabled_at: datetime | None,
) -> Principal:
    """Who a found token stands for (``user_role`` is None when its user does not exist)."""
    if revoked_at is not None:
        raise AuthFailure("revoked")
    if user_name is None:
        return Principal(token_name, token_role, token_name)
    if user_role is None:
        raise AuthFailure("invalid")
    if disabled_at is not None:
        raise AuthFailure("disabled")
    return Principal(user_name, user_role, token_name)


async def authenticate(db: Database, token: str) -> Principal:
    """The principal of a bearer token, or ``AuthFailure`` (one query, no cache)."""
    statement = (
        select(
            ApiToken.name,
            ApiToken.role,
            ApiToken.user_name,
            ApiToken.revoked_at,
            ApiUser.role,
            ApiUser.disabled_at,
        )
        .outerjoin(ApiUser, ApiUser.name == ApiToken.user_name)
        .where(ApiToken.token_hash == hash_token(token))
    )
    async with db.session() as session:
        row = (await session.execute(statement)).first()
    if row is None:
        raise AuthFailure("invalid")
    return _principal(*row)


def _unauthorized(detail: str, reason: str) -> Problem:
    metrics.HTTP_AUTH_FAILURES.labels(reason).inc()
    # RFC 9110 11.6.1: a 401 names the scheme that would be accepted
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


#: declares the scheme in OpenAPI (the Authorize button of /docs); the header is read below
BEARER = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer <token>`")


async def _principal_of(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <token>", "missing")
    db: Database = request.app.state.db
    try:
        return await authenticate(db, token)
    except AuthFailure as exc:
        raise _unauthorized("unknown, revoked or disabled token", exc.reason) from None


async def current_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> Principal:
    return await _principal_of(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def _needs_principal(dependant: Dependant) -> bool:
    return any(d.call is current_principal or _needs_principal(d) for d in dependant.dependencies)


def _required_roles(dependant: Dependant) -> list[tuple[str, ...]]:
    """The role sets of every ``require_role`` dependency of a route (each must admit)."""
    found: list[tuple[str, ...]] = []
    for d in dependant.dependencies:
        roles = getattr(d.call, "required_roles", None)
        if roles is not None:
            found.append(roles)
        found.extend(_required_roles(d))
    return found


async def authenticate_invalid(request: Request) -> None:
    """The 401 of a route needing a token, for a request whose input failed validation.

    Decision: FastAPI parses a JSON body before it resolves dependencies, so a malformed
    body from an anonymous caller was a 422 that told it about the route. The problem
    handler for validation errors calls this first (``services.problems.install``); on a
    valid token of a role the route refuses it is the route's 403 (a caller may not learn
    what the route would accept); otherwise the usual 422 follows."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute) and _needs_principal(route.dependant):
        principal = await _principal_of(request)
        for roles in _required_roles(route.dependant):
            _refuse_unless(principal, roles)


def _refuse_unless(principal: Principal, roles: tuple[str, ...]) -> None:
    if principal.role not in roles:
        raise Problem(403, "Forbidden", f"role {principal.role!r} may not do this")


def require_role(*roles: str) -> object:
    """A dependency admitting only the given roles (403 otherwise)."""
    for role in roles:
        _check_role(role)

    async def check(principal: CurrentPrincipal) -> Principal:
        _refuse_unless(principal, roles)
        return principal

    check.required_roles = roles  # type: ignore[attr-defined]  # read by authenticate_invalid
    return Depends(check)


AdminOrDispatcher = Annotated[Principal, require_role("admin", "dispatcher")]
AnyRole = CurrentPrincipal
