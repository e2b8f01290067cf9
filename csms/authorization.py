"""Id-token authorization for Authorize, StartTransaction and TransactionEvent.

Decisions: a token the table does not hold is ``Invalid`` in 1.6 (its AuthorizationStatus
has no other word: "Invalid: identifier is unknown") and ``Unknown`` in 2.0.1, whose
``Invalid`` is a known token that is not valid (the id-token API's status ``Invalid``).
A 2.0.1 ``NoAuthorization`` token (empty ``idToken``: the station did no authorization, a
free-vend start) has nothing to check and is ``Accepted``: answering it Invalid or Unknown
would let a station with StopTxOnInvalidId end the free transaction it reports.

Decision (token types): a 2.0.1 IdToken is its ``idToken`` and its ``type`` together (the
same characters read from an RFID card and typed as a PIN are two credentials), so a
stored token with a type matches a 2.0.1 token only of that type, and is unknown to any
other. A token stored without a type matches any type; 1.6 idTags have no type and match
a stored token whatever its type. (The API's default type was ISO14443 and no type was
compared; migration 0017 makes those tokens typeless, so none is refused after it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from csms.context import CsmsContext
from csms.tables import IdToken, same_id_token
from services.db import table_of

ID_TOKENS = table_of(IdToken)


@dataclass(frozen=True)
class TokenVerdict:
    status: str  # Accepted | Blocked | Expired | Invalid (| Unknown in 2.0.1)
    expires_at: datetime | None = None
    group_id: str | None = None


async def authorize(
    ctx: CsmsContext,
    token: str | None,
    *,
    unknown: str = "Invalid",
    token_type: str | None = None,
) -> TokenVerdict:
    """The verdict on ``token`` (of ``token_type``, for 2.0.1); ``unknown`` is the status
    of a token not in the table."""
    if token is None:
        return TokenVerdict(unknown)
    async with ctx.db.engine.connect() as conn:
        query = select(ID_TOKENS).where(same_id_token(ID_TOKENS.c.token, token))
        row = (await conn.execute(query)).first()
    if row is not None and None not in (row.type, token_type) and row.type != token_type:
        row = None  # the same characters as another type: another credential
    if row is None:
        return TokenVerdict("Accepted" if ctx.settings.authorize_accept_all else unknown)
    status = row.status
    if status == "Accepted" and row.expires_at is not None and row.expires_at <= ctx.clock():
        status = "Expired"
    return TokenVerdict(status, row.expires_at, row.group_id)


async def authorize_201(ctx: CsmsContext, id_token: dict[str, Any]) -> TokenVerdict:
    """The verdict on a 2.0.1 IdTokenType (snake_case keys)."""
    if id_token.get("type") == "NoAuthorization":
        return TokenVerdict("Accepted")
    return await authorize(
        ctx, id_token.get("id_token"), unknown="Unknown", token_type=id_token.get("type")
    )
