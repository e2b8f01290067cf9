"""HTTP API of users and their tokens (admin only), and ``GET /api/v1/me`` (any role).

A token is in an answer exactly once: the 201 of its creation. Listings show token names
and times, never tokens or hashes. Domain errors of ``services.api_auth`` become problem
documents here, through ``STATUS`` (a table, not a chain of excepts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services import api_auth
from services.api_auth import AnyRole, Principal, Role, UserError, UserInfo, require_role
from services.db import Database
from services.problems import Problem

router = APIRouter(prefix="/api/v1", tags=["users"])
Admin = Annotated[Principal, require_role("admin")]

STATUS: dict[type[UserError], tuple[int, str]] = {
    api_auth.InvalidName: (422, "Unprocessable Content"),
    api_auth.InvalidRole: (422, "Unprocessable Content"),
    api_auth.UnknownUser: (404, "Not Found"),
    api_auth.DuplicateUser: (409, "Conflict"),
    api_auth.DuplicateToken: (409, "Conflict"),
    api_auth.UserDisabled: (409, "Conflict"),
    api_auth.LastAdmin: (409, "Conflict"),
}


def _problem(exc: UserError) -> Problem:
    status, title = STATUS.get(type(exc), (400, "Bad Request"))
    return Problem(status, title, str(exc))


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


Slug = Annotated[str, Field(pattern=api_auth.SLUG.pattern)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Slug = Field(description="lower-case slug; a technician's ticketing user_name")
    role: Role


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = Field(default=None, description="true refuses all of its tokens")

    @model_validator(mode="after")
    def _something(self) -> UserUpdate:
        if self.role is None and self.disabled is None:
            raise ValueError("give role and/or disabled")
        return self


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Slug = Field(description="the token is named USER/LABEL")


class TokenOut(BaseModel):
    name: str
    created_at: datetime
    revoked_at: datetime | None


class LegacyTokenOut(TokenOut):
    role: str


class UserOut(BaseModel):
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None
    tokens: list[TokenOut]


class UserList(BaseModel):
    items: list[UserOut]
    legacy_tokens: list[LegacyTokenOut] = Field(
        description="tokens made before users existed: no user, their own role applies"
    )


class IssuedToken(BaseModel):
    token_name: str
    token: str = Field(description="shown only in this answer; stored only as a hash")


class Me(BaseModel):
    name: str
    role: str
    token_name: str


def _out(user: UserInfo) -> UserOut:
    return UserOut(
        name=user.name,
        role=user.role,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
        tokens=[
            TokenOut(name=t.name, created_at=t.created_at, revoked_at=t.revoked_at)
            for t in user.tokens
        ],
    )


@router.get("/me", response_model=Me)
async def me(principal: AnyRole) -> Me:
    """Who the presented token authenticates as."""
    return Me(name=principal.name, role=principal.role, token_name=principal.token_name)


@router.get("/users", response_model=UserList)
async def list_users(request: Request, _: Admin) -> UserList:
    db = _db(request)
    users = await api_auth.list_users(db)
    legacy = await api_auth.legacy_tokens(db)
    return UserList(
        items=[_out(u) for u in users],
        legacy_tokens=[
            LegacyTokenOut(
                name=t.name, role=t.role, created_at=t.created_at, revoked_at=t.revoked_at
            )
            for t in legacy
        ],
    )


@router.post("/users", status_code=201, response_model=UserOut)
async def create_user(body: UserCreate, request: Request, _: Admin) -> UserOut:
    try:
        return _out(await api_auth.create_user(_db(request), body.name, body.role))
    except UserError as exc:
        raise _problem(exc) from None


@router.get("/users/{name}", response_model=UserOut)
async def get_user(name: str, request: Request, _: Admin) -> UserOut:
    try:
        return _out(await api_auth.get_user(_db(request), name))
    except UserError as exc:
        raise _problem(exc) from None


@router.patch("/users/{name}", response_model=UserOut)
async def update_user(name: str, body: UserUpdate, request: Request, _: Admin) -> UserOut:
    """Change the role or (re-)enable; applies to every token of the user at once."""
    try:
        user = await api_auth.update_user(
            _db(request), name, role=body.role, disabled=body.disabled
        )
    except UserError as exc:
        raise _problem(exc) from None
    return _out(user)


@router.post("/users/{name}/tokens", status_code=201, response_model=IssuedToken)
async def issue_token(name: str, body: TokenCreate, request: Request, _: Admin) -> IssuedToken:
    """Issue a token; this answer is the only time it is shown."""
    try:
        token_name, token = await api_auth.issue_token(_db(request), name, body.label)
    except UserError as exc:
        raise _problem(exc) from None
    return IssuedToken(token_name=token_name, token=token)


@router.delete("/users/{name}/tokens/{label}", status_code=204)
async def revoke_token(name: str, label: str, request: Request, _: Admin) -> Response:
    """Revoke a token (idempotent: revoking a revoked token answers 204 again)."""
    db = _db(request)
    token_name = f"{name}/{label}"
    try:
        user = await api_auth.get_user(db, name)
    except UserError as exc:
        raise _problem(exc) from None
    if token_name not in {t.name for t in user.tokens}:
        raise Problem(404, "Not Found", f"no token {token_name!r}")
    await api_auth.revoke_token(db, token_name)
    return Response(status_code=204)
