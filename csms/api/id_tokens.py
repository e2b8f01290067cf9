"""Id tokens used by Authorize, StartTransaction and TransactionEvent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from csms.api.schemas import IdTokenCreate, IdTokenOut, IdTokenUpdate
from csms.tables import IdToken, same_id_token
from services.api_auth import AdminOrDispatcher, AnyRole
from services.api_params import Offset
from services.db import Database, utcnow
from services.problems import Problem

router = APIRouter(prefix="/id-tokens", tags=["id tokens"])


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _out(t: IdToken) -> IdTokenOut:
    return IdTokenOut(
        token=t.token,
        type=t.type,
        status=t.status,
        expires_at=t.expires_at,
        group_id=t.group_id,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


async def _find(session: AsyncSession, token: str) -> IdToken | None:
    """The id token ``token`` stands for, up to case (OCPP idTags are CiStrings)."""
    query = select(IdToken).where(same_id_token(IdToken.token, token))
    return (await session.execute(query)).scalar_one_or_none()


@router.post("", status_code=201, response_model=IdTokenOut)
async def create_id_token(
    body: IdTokenCreate, request: Request, _: AdminOrDispatcher
) -> IdTokenOut:
    now = utcnow()
    token = IdToken(**body.model_dump(), created_at=now, updated_at=now)
    async with _db(request).session() as session:
        session.add(token)
        try:
            await session.commit()
        except IntegrityError:
            raise Problem(409, "Conflict", f"id token {body.token!r} already exists") from None
    return _out(token)


@router.get("", response_model=list[IdTokenOut])
async def list_id_tokens(
    request: Request,
    _: AnyRole,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[IdTokenOut]:
    query = select(IdToken).order_by(IdToken.token).limit(limit).offset(offset)
    if status is not None:
        query = query.where(IdToken.status == status)
    async with _db(request).session() as session:
        return [_out(t) for t in (await session.execute(query)).scalars()]


@router.get("/{token}", response_model=IdTokenOut)
async def get_id_token(token: str, request: Request, _: AnyRole) -> IdTokenOut:
    async with _db(request).session() as session:
        row = await _find(session, token)
    if row is None:
        raise Problem(404, "Not Found", f"no id token {token!r}")
    return _out(row)


@router.patch("/{token}", response_model=IdTokenOut)
async def update_id_token(
    token: str, body: IdTokenUpdate, request: Request, _: AdminOrDispatcher
) -> IdTokenOut:
    async with _db(request).session() as session:
        row = await _find(session, token)
        if row is None:
            raise Problem(404, "Not Found", f"no id token {token!r}")
        for key, value in body.model_dump(exclude_unset=True).items():
            if value is None and key == "status":
                raise Problem(422, "Request validation failed", f"{key} cannot be null")
            setattr(row, key, value)
        row.updated_at = utcnow()
        await session.commit()
    return _out(row)


@router.delete("/{token}", status_code=204)
async def delete_id_token(token: str, request: Request, _: AdminOrDispatcher) -> Response:
    async with _db(request).session() as session:
        row = await _find(session, token)
        if row is None:
            raise Problem(404, "Not Found", f"no id token {token!r}")
        await session.delete(row)
        await session.commit()
    return Response(status_code=204)
