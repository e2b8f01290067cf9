"""Remote-start grants: the id token an operator's remote start sent to a charger.

A remote start (1.6 RemoteStartTransaction, 2.0.1 RequestStartTransaction) names an id
token; the charger then authorizes it (1.6 Authorize with AuthorizeRemoteTxRequests,
2.0.1 Authorize with AuthorizeRemoteStart) and starts the transaction with it
(StartTransaction / TransactionEvent), and a charger configured to stop on an invalid id
(StopTransactionOnInvalidId, StopTxOnInvalidId) ends the transaction when we answer the
token Invalid / Unknown. An operator may start a session for a token the id-token table
does not hold (a customer's app token, a roaming or ad-hoc one).

Decision: a token the CSMS sent in a remote start to a charger is Accepted from that
charger, where the id-token table does not know it (a Blocked, Expired or Invalid token
stays what the table says: a remote start does not unblock a card), for
``CHARGEOPS_REMOTE_START_WINDOW`` seconds from the command (the charger waits up to its
ConnectionTimeOut / EVConnectionTimeOut for the cable) and, once a transaction started
with it in that window, until that transaction ends. It is no credential anywhere else:
another charger, or this one after the window with no transaction, gets the table's
answer. 2.0.1: it matches only the idToken type sent. Grants are rows, not memory: the
charger may reconnect to another csms node, or the process restart, between the command
and the transaction. A remote start the charger answers Rejected (or a CALLERROR, or one
never sent) withdraws its grant.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Exists, and_, delete, exists, or_, select, true
from sqlalchemy.engine import Connection

from csms.context import CsmsContext
from csms.state import TRANSACTIONS
from csms.tables import RemoteStartGrant, same_id_token
from services.db import table_of

if TYPE_CHECKING:
    from csms.session import OcppSession

GRANTS = table_of(RemoteStartGrant)


def _running(transaction_id: ColumnElement[str | None]) -> Exists:
    """A transaction of the grant's charger with this id is still running."""
    return exists().where(
        TRANSACTIONS.c.charger_id == GRANTS.c.charger_id,
        TRANSACTIONS.c.transaction_id == transaction_id,
        TRANSACTIONS.c.stopped_at.is_(None),
    )


async def grant(ctx: CsmsContext, charger_id: str, token: str, token_type: str | None) -> int:
    """Record the grant of a remote start about to be sent; the charger's spent grants
    (expired, no transaction running on them) are deleted on the way."""
    now = ctx.clock()
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            delete(GRANTS).where(
                GRANTS.c.charger_id == charger_id,
                GRANTS.c.expires_at <= now,
                ~_running(GRANTS.c.transaction_id),
            )
        )
        result = await conn.execute(
            GRANTS.insert().values(
                charger_id=charger_id,
                token=token,
                token_type=token_type,
                granted_at=now,
                expires_at=now + timedelta(seconds=ctx.settings.remote_start_window),
                transaction_id=None,
            )
        )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def withdraw(ctx: CsmsContext, grant_id: int) -> None:
    async with ctx.db.engine.begin() as conn:
        await conn.execute(delete(GRANTS).where(GRANTS.c.id == grant_id))


async def find(ctx: CsmsContext, charger_id: str, token: str, token_type: str | None) -> int | None:
    """The grant that lets ``charger_id`` use ``token`` (of ``token_type``) now, if any."""
    query = (
        select(GRANTS.c.id)
        .where(
            GRANTS.c.charger_id == charger_id,
            same_id_token(GRANTS.c.token, token),
            or_(GRANTS.c.token_type.is_(None), GRANTS.c.token_type == token_type)
            if token_type is not None
            else true(),
            or_(
                GRANTS.c.expires_at > ctx.clock(),
                and_(
                    GRANTS.c.transaction_id.is_not(None),
                    _running(GRANTS.c.transaction_id),
                ),
            ),
        )
        .order_by(GRANTS.c.id.desc())
        .limit(1)
    )
    async with ctx.db.engine.connect() as conn:
        found = (await conn.execute(query)).scalar()
    return int(found) if found is not None else None


def bind(session: OcppSession, grant_id: int, transaction_id: str) -> None:
    """The transaction started with the grant's token: it holds until that one ends
    (the first transaction only; written with the message's other rows)."""

    def update(conn: Connection) -> None:
        conn.execute(
            GRANTS.update()
            .where(GRANTS.c.id == grant_id, GRANTS.c.transaction_id.is_(None))
            .values(transaction_id=transaction_id)
        )

    session.incoming.writes.then(update)
