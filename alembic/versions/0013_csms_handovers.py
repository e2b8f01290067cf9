"""csms_handovers: chargers taken over from a node whose death was not known yet

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "csms_handovers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("from_node", sa.String(length=64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_csms_handovers")),
    )
    op.create_index("ix_csms_handovers_from_node", "csms_handovers", ["from_node"])


def downgrade() -> None:
    op.drop_index("ix_csms_handovers_from_node", table_name="csms_handovers")
    op.drop_table("csms_handovers")
