"""problem_state: 2.0.1 problem reports still open, to match a clearing to its raise

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "problem_state",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("problem_key", sa.String(length=64), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=True),
        sa.Column("connector_id", sa.Integer(), nullable=True),
        sa.Column("component", sa.String(length=50), nullable=False),
        sa.Column("component_instance", sa.String(length=50), nullable=True),
        sa.Column("variable", sa.String(length=50), nullable=False),
        sa.Column("variable_instance", sa.String(length=50), nullable=True),
        sa.Column("error_code", sa.String(length=101), nullable=False),
        sa.Column("tech_code", sa.String(length=50), nullable=True),
        sa.Column("tech_info", sa.String(length=500), nullable=True),
        sa.Column("vendor_id", sa.String(length=255), nullable=True),
        sa.Column("event_code", sa.Integer(), nullable=False),
        sa.Column("raise_event_id", sa.String(length=36), nullable=False),
        sa.Column("charger_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_by", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["charger_id"],
            ["chargers.id"],
            name=op.f("fk_problem_state_charger_id_chargers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("charger_id", "problem_key", name=op.f("pk_problem_state")),
    )


def downgrade() -> None:
    op.drop_table("problem_state")
