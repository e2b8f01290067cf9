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
compared; migration 0012 makes those tokens typeless, so none is refused after it.)

A token an operator's remote start sent to the charger asking is Accepted where the table
does not know it (``csms.remote_starts``: that charger only, for a window and while the
transaction started with it runs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from csms import remote_starts
from csms.context import CsmsContext
from csms.tables import IdToken, same_id_token
from services.db import table_of
from services.observability.metrics import REMOTE_START_AUTHORIZATIONS

ID_TOKENS = table_of(IdToken)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenVerdict:
    status: str  # Accepted | Blocked | Expired | Invalid (| Unknown in 2.0.1)
    expires_at: datetime | None = None
    group_id: str | None = None
    #: the remote-start grant that made an unknown token Accepted
    grant_id: int | None = None


async def authorize(
    ctx: CsmsContext,
    token: str | None,
    *,
    unknown: str = "Invalid",
    token_type: str | None = None,
    charger_id: str | None = None,
) -> TokenVerdict:
    """The verdict on ``token`` (of ``token_type``, for 2.0.1) from ``charger_id``;
    ``unknown`` is the status of a token not in the table (nor granted by a remote start)."""
    if token is None:
        return TokenVerdict(unknown)
    async with ctx.db.engine.connect() as conn:
        query = select(ID_TOKENS).where(same_id_token(ID_TOKENS.c.token, token))
        row = (await conn.execute(query)).first()
    if row is not None and None not in (row.type, token_type) and row.type != token_type:
        row = None  # the same characters as another type: another credential
    if row is None:
        if ctx.settings.authorize_accept_all:
            return TokenVerdict("Accepted")
        if charger_id is not None:
            grant_id = await remote_starts.find(ctx, charger_id, token, token_type)
            if grant_id is not None:
                REMOTE_START_AUTHORIZATIONS.inc()
                log.info("charger %s: token accepted by remote start %d", charger_id, grant_id)
                return TokenVerdict("Accepted", grant_id=grant_id)
        return TokenVerdict(unknown)
    status = row.status
    if status == "Accepted" and row.expires_at is not None and row.expires_at <= ctx.clock():
        status = "Expired"
    return TokenVerdict(status, row.expires_at, row.group_id)


async def authorize_201(
    ctx: CsmsContext, id_token: dict[str, Any], charger_id: str | None = None
) -> TokenVerdict:
    """The verdict on a 2.0.1 IdTokenType (snake_case keys) from ``charger_id``."""
    if id_token.get("type") == "NoAuthorization":
        return TokenVerdict("Accepted")
    return await authorize(
        ctx,
        id_token.get("id_token"),
        unknown="Unknown",
        token_type=id_token.get("type"),
        charger_id=charger_id,
    )
