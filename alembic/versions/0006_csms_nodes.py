"""csms node liveness

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Nodes that held chargers before this table existed get a row beaten "now": if they are
gone, the sweepers of the running nodes mark their chargers offline after the beat timeout
and the offline grace, like any other dead node's.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "csms_nodes",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_beat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_csms_nodes")),
    )
    conn = op.get_bind()
    held = conn.execute(
        sa.text(
            "SELECT DISTINCT node_id FROM charger_state "
            "WHERE node_id IS NOT NULL AND (online OR connected)"
        )
    ).scalars()
    now = datetime.now(UTC)
    if conn.dialect.name == "sqlite":
        # SQLAlchemy's own SQLite text for a UTC instant (see services.db.UTCDateTime).
        stamp: object = now.replace(tzinfo=None).isoformat(" ", "microseconds")
    else:
        stamp = now
    rows = [{"node_id": n, "at": stamp} for n in held]
    if rows:
        conn.execute(
            sa.text(
                "INSERT INTO csms_nodes (node_id, started_at, last_beat) VALUES (:node_id, :at, :at)"
            ),
            rows,
        )


def downgrade() -> None:
    op.drop_table("csms_nodes")
