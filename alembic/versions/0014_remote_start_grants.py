"""remote_start_grants: the id tokens operators' remote starts sent to chargers, accepted
from that charger for a window and while the transaction started with them runs
(csms/remote_starts.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "remote_start_grants",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("token", sa.String(length=36), nullable=False),
        sa.Column("token_type", sa.String(length=20), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_start_grants")),
    )
    op.create_index(
        "ix_remote_start_grants_charger_id", "remote_start_grants", ["charger_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_remote_start_grants_charger_id", table_name="remote_start_grants")
    op.drop_table("remote_start_grants")
