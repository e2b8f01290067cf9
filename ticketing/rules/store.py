"""Fault rules in the database: seeding, the cached classifier, and the edit operations.

Every function is synchronous on a ``Connection``: writes run inside the group commit
(:func:`ticketing.tx.transact`), reads through ``AsyncConnection.run_sync``.

Decisions:
- :func:`classify` runs on the hot path of fault intake, so it keeps the rule set in a
  per-process cache (one per engine: a process has a writer engine and an API engine) and
  checks it with one query per call, ``SELECT count(*), max(updated_at)``. Every write here
  stamps the rows it touches with a time strictly after the table's current maximum, so
  any insert or update changes that pair even if the clock did not move, and a delete
  changes the count: an edit made by another process is seen on the next call. (Rows
  edited outside this module, by hand, are seen only if their ``updated_at`` moves up.)
- Every write first locks all rule rows (``FOR UPDATE``; SQLite has a single writer), so
  concurrent edits on several replicas serialise their position and catch-all checks.
- Positions are unique. Taking a held position moves its holder, and the run of rules
  right after it with consecutive positions, down by one; seeding leaves gaps of 10.
- The catch-all is the only rule with an empty match: it stays last and enabled, and
  cannot be deleted or given a match (``Conflict``, 409).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, RowMapping, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from services.db import table_of
from ticketing.rules.defaults import default_rules
from ticketing.rules.matcher import classify_with
from ticketing.rules.model import Classification, FaultSignature, Rule, RuleIn
from ticketing.tables import FaultRule
from ticketing.tx import Conflict, NotFound

RULES = table_of(FaultRule)
#: the gap between seeded positions, and after the last rule when appending
POSITION_STEP = 10
_TICK = timedelta(microseconds=1)


# ---------------------------------------------------------------- reading
def _rule(row: RowMapping) -> Rule:
    return Rule(**dict(row))


def list_rules(conn: Connection) -> list[Rule]:
    """Every rule, enabled or not, by ascending position."""
    rows = conn.execute(select(RULES).order_by(RULES.c.position)).mappings()
    return [_rule(row) for row in rows]


def get_rule(conn: Connection, rule_id: int) -> Rule:
    row = conn.execute(select(RULES).where(RULES.c.id == rule_id)).mappings().first()
    if row is None:
        raise NotFound(f"no fault rule {rule_id}")
    return _rule(row)


# ---------------------------------------------------------------- classifying
@dataclass(frozen=True)
class _Snapshot:
    fingerprint: tuple[int, datetime | None]
    enabled: tuple[Rule, ...]


_snapshots: weakref.WeakKeyDictionary[Engine, _Snapshot] = weakref.WeakKeyDictionary()
_snapshots_lock = threading.Lock()


def _fingerprint(rules: Sequence[Rule]) -> tuple[int, datetime | None]:
    stamps = [r.updated_at for r in rules if r.updated_at is not None]
    return (len(rules), max(stamps, default=None))


_FINGERPRINT = select(func.count(), func.max(RULES.c.updated_at)).select_from(RULES)


def current_rules(conn: Connection) -> tuple[Rule, ...]:
    """The enabled rules by position, from the cache when the table has not changed."""
    count, latest = conn.execute(_FINGERPRINT).one()
    with _snapshots_lock:
        snapshot = _snapshots.get(conn.engine)
    if snapshot is not None and snapshot.fingerprint == (count, latest):
        return snapshot.enabled
    rules = list_rules(conn)
    snapshot = _Snapshot(_fingerprint(rules), tuple(r for r in rules if r.enabled))
    with _snapshots_lock:
        _snapshots[conn.engine] = snapshot
    return snapshot.enabled


def classify(conn: Connection, signature: FaultSignature) -> Classification:
    """Classify a fault with the stored rules (first enabled match by position)."""
    return classify_with(current_rules(conn), signature)


# ---------------------------------------------------------------- seeding
def _insert_ignoring_conflicts(conn: Connection) -> Insert:
    if conn.dialect.name == "postgresql":
        return pg_insert(RULES).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite_insert(RULES).on_conflict_do_nothing()
    return insert(RULES)


def _columns(rule: RuleIn) -> dict[str, Any]:
    return rule.model_dump(exclude={"position"})


def seed_defaults(conn: Connection, now: datetime) -> int:
    """Load ``default_rules.yaml`` into an empty rule table; the number of rules inserted.

    Safe when several replicas start at once: a rule another one inserted first is skipped.
    """
    if conn.execute(select(func.count()).select_from(RULES)).scalar_one():
        return 0
    statement = _insert_ignoring_conflicts(conn)
    inserted = 0
    for index, rule in enumerate(default_rules(), start=1):
        values = {
            **_columns(rule),
            "position": index * POSITION_STEP,
            "origin": "default",
            "updated_at": now,
        }
        inserted += conn.execute(statement.values(**values)).rowcount
    return inserted


# ---------------------------------------------------------------- editing
def _locked(conn: Connection) -> list[Rule]:
    query = select(RULES).order_by(RULES.c.position).with_for_update()
    return [_rule(row) for row in conn.execute(query).mappings()]


def _stamp(rules: Sequence[Rule], now: datetime) -> datetime:
    """``now``, or just after the newest row if the clock has not moved past it."""
    latest = _fingerprint(rules)[1]
    return now if latest is None or now > latest else latest + _TICK


def _check_name(rules: Sequence[Rule], name: str, rule_id: int | None) -> None:
    for other in rules:
        if other.id != rule_id and other.name.casefold() == name.casefold():
            raise Conflict(f"a fault rule named {other.name!r} exists (id {other.id})")


def _place(rules: Sequence[Rule], rule: RuleIn, rule_id: int | None, default: int) -> int:
    """Where the rule goes, after checking the catch-all stays unique, enabled and last."""
    others = [r for r in rules if r.id != rule_id]
    catch_all = next((r for r in others if r.is_catch_all), None)
    position = rule.position if rule.position is not None else default
    if not rule.match:
        if catch_all is not None:
            raise Conflict(
                f"rule {catch_all.name!r} is the catch-all already; give this rule a match"
            )
        if not rule.enabled:
            raise Conflict("the catch-all cannot be disabled")
        if any(r.position >= position for r in others):
            raise Conflict("the catch-all must stay last: give it a position after every rule")
    elif catch_all is not None and position > catch_all.position:
        raise Conflict(
            f"position {position} is after the catch-all ({catch_all.position}), "
            "where no rule can match"
        )
    return position


def _make_room(conn: Connection, others: Sequence[Rule], position: int, stamp: datetime) -> None:
    """Free ``position`` by moving its holder and the consecutive run after it down one."""
    held = {r.position: r for r in others}
    run: list[Rule] = []
    while position in held:
        run.append(held[position])
        position += 1
    for moved in reversed(run):
        conn.execute(
            RULES.update()
            .where(RULES.c.id == moved.id)
            .values(position=moved.position + 1, updated_at=stamp)
        )


def create_rule(conn: Connection, rule: RuleIn, now: datetime) -> Rule:
    """Insert ``rule``; without a position it goes just before the catch-all."""
    rules = _locked(conn)
    _check_name(rules, rule.name, None)
    catch_all = next((r for r in rules if r.is_catch_all), None)
    last = rules[-1].position if rules else 0
    default = catch_all.position if catch_all is not None and rule.match else last + POSITION_STEP
    position = _place(rules, rule, None, default)
    stamp = _stamp(rules, now)
    _make_room(conn, rules, position, stamp)
    values = {**_columns(rule), "position": position, "origin": "api", "updated_at": stamp}
    rule_id: int = conn.execute(RULES.insert().values(**values).returning(RULES.c.id)).scalar_one()
    return get_rule(conn, rule_id)


def update_rule(conn: Connection, rule_id: int, rule: RuleIn, now: datetime) -> Rule:
    """Replace rule ``rule_id`` with ``rule``; without a position it stays where it is."""
    rules = _locked(conn)
    current = next((r for r in rules if r.id == rule_id), None)
    if current is None:
        raise NotFound(f"no fault rule {rule_id}")
    _check_name(rules, rule.name, rule_id)
    if current.is_catch_all and rule.match:
        raise Conflict("the catch-all matches everything; its match cannot change")
    position = _place(rules, rule, rule_id, current.position)
    stamp = _stamp(rules, now)
    if position != current.position:
        # park it on a position no rule can hold, so the shift below cannot collide with it
        conn.execute(RULES.update().where(RULES.c.id == rule_id).values(position=-rule_id))
        _make_room(conn, [r for r in rules if r.id != rule_id], position, stamp)
    values = {**_columns(rule), "position": position, "updated_at": stamp}
    conn.execute(RULES.update().where(RULES.c.id == rule_id).values(**values))
    return get_rule(conn, rule_id)


def delete_rule(conn: Connection, rule_id: int) -> None:
    """Delete rule ``rule_id``; the catch-all cannot be deleted."""
    rules = _locked(conn)
    current = next((r for r in rules if r.id == rule_id), None)
    if current is None:
        raise NotFound(f"no fault rule {rule_id}")
    if current.is_catch_all:
        raise Conflict("the catch-all cannot be deleted")
    conn.execute(RULES.delete().where(RULES.c.id == rule_id))
