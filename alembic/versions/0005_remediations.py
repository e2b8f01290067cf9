"""remote remediation of work orders

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ticketing_remediations",
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("connector", sa.String(length=16), nullable=True),
        sa.Column("playbook", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["ticketing_work_orders.id"],
            name=op.f("fk_ticketing_remediations_order_id_ticketing_work_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_ticketing_remediations")),
    )
    op.create_index(
        op.f("ix_ticketing_remediations_next_at"), "ticketing_remediations", ["next_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ticketing_remediations_next_at"), table_name="ticketing_remediations")
    op.drop_table("ticketing_remediations")
