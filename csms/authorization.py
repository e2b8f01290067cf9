"""Id-token authorization for Authorize, StartTransaction and TransactionEvent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from csms.context import CsmsContext
from csms.tables import IdToken, same_id_token
from services.db import table_of

ID_TOKENS = table_of(IdToken)


@dataclass(frozen=True)
class TokenVerdict:
    status: str  # Accepted | Blocked | Expired | Invalid
    expires_at: datetime | None = None
    group_id: str | None = None


async def authorize(ctx: CsmsContext, token: str | None) -> TokenVerdict:
    if token is None:
        return TokenVerdict("Invalid")
    async with ctx.db.engine.connect() as conn:
        query = select(ID_TOKENS).where(same_id_token(ID_TOKENS.c.token, token))
        row = (await conn.execute(query)).first()
    if row is None:
        return TokenVerdict("Accepted" if ctx.settings.authorize_accept_all else "Invalid")
    status = row.status
    if status == "Accepted" and row.expires_at is not None and row.expires_at <= ctx.clock():
        status = "Expired"
    return TokenVerdict(status, row.expires_at, row.group_id)
