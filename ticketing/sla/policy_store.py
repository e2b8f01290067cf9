"""Writes of SLA policies: create, replace, delete (ops for ``ticketing.tx.transact``).

Each op checks before it writes and raises ``NotFound``/``Conflict`` then (ticketing.tx).

Decisions:

- The last catch-all policy (no priority, no contract type) can be neither deleted nor
  turned into a specific one: :func:`ticketing.sla.policies.select_policy` must always
  find a policy. The catch-all rows are locked while checking (PostgreSQL), so two
  concurrent deletes cannot remove the last two.
- A policy still referenced by a running SLA clock or an open work order is not deleted
  (409): the engine reads its calendar and windows until the order closes.
- A duplicate name is checked first; a concurrent insert of the same name that slips past
  the check hits the unique index, which :func:`duplicate_name_is_conflict` turns into 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.db import table_of
from ticketing.sla.policies import PolicyRow, SlaPolicyIn, get_policy, policies_table
from ticketing.tables import SlaClock, WorkOrder
from ticketing.tx import Conflict, NotFound


def create_policy(conn: Connection, data: SlaPolicyIn, now: datetime) -> PolicyRow:
    t = policies_table()
    _require_free_name(conn, data.name, None)
    result = conn.execute(t.insert().values(**data.to_values(), updated_at=now))
    key = result.inserted_primary_key
    assert key is not None
    created = get_policy(conn, int(key[0]))
    assert created is not None
    return created


def replace_policy(conn: Connection, policy_id: int, data: SlaPolicyIn, now: datetime) -> PolicyRow:
    """PUT: every field is replaced by ``data``."""
    t = policies_table()
    current = _locked(conn, policy_id)
    _require_free_name(conn, data.name, policy_id)
    stays_catch_all = data.priority is None and data.contract_type is None
    if current.is_catch_all and not stays_catch_all and _catch_all_count(conn) <= 1:
        raise Conflict(
            f"policy {current.name!r} is the last catch-all (no priority, no contract type); "
            "create another catch-all first"
        )
    conn.execute(t.update().where(t.c.id == policy_id).values(**data.to_values(), updated_at=now))
    replaced = get_policy(conn, policy_id)
    assert replaced is not None
    return replaced


def delete_policy(conn: Connection, policy_id: int) -> None:
    t = policies_table()
    current = _locked(conn, policy_id)
    if current.is_catch_all and _catch_all_count(conn) <= 1:
        raise Conflict(f"policy {current.name!r} is the last catch-all and cannot be deleted")
    clocks, orders = table_of(SlaClock), table_of(WorkOrder)
    running = conn.execute(
        select(func.count())
        .select_from(clocks)
        .where(clocks.c.policy_id == policy_id, clocks.c.stopped_at.is_(None))
    ).scalar_one()
    open_orders = conn.execute(
        select(func.count())
        .select_from(orders)
        .where(orders.c.sla_policy_id == policy_id, orders.c.closed_at.is_(None))
    ).scalar_one()
    if running or open_orders:
        raise Conflict(
            f"policy {current.name!r} is in use by {open_orders} open work orders "
            f"and {running} running SLA clocks",
            open_orders=open_orders,
            running_clocks=running,
        )
    conn.execute(t.delete().where(t.c.id == policy_id))


@contextmanager
def duplicate_name_is_conflict(name: str) -> Iterator[None]:
    """Around ``transact``: a unique-index violation (a concurrent twin) becomes 409."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"an SLA policy named {name!r} already exists") from exc


def _locked(conn: Connection, policy_id: int) -> PolicyRow:
    t = policies_table()
    row = conn.execute(select(t).where(t.c.id == policy_id).with_for_update()).mappings().first()
    if row is None:
        raise NotFound(f"no SLA policy {policy_id}")
    return PolicyRow.from_row(row)


def _catch_all_count(conn: Connection) -> int:
    t = policies_table()
    ids = conn.execute(
        select(t.c.id).where(t.c.priority.is_(None), t.c.contract_type.is_(None)).with_for_update()
    ).all()
    return len(ids)


def _require_free_name(conn: Connection, name: str, own_id: int | None) -> None:
    t = policies_table()
    holder = conn.execute(select(t.c.id).where(t.c.name == name)).scalar()
    if holder is not None and holder != own_id:
        raise Conflict(f"an SLA policy named {name!r} already exists", policy_id=holder)
