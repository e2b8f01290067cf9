"""command log: every command sent to a charger, its outcome and progress

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "command_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("forbid_during_transaction", sa.Boolean(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("progress_status", sa.String(length=64), nullable=True),
        sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_log")),
        sa.UniqueConstraint("command_id", name=op.f("uq_command_log_command_id")),
    )
    with op.batch_alter_table("command_log", schema=None) as batch_op:
        batch_op.create_index("ix_command_log_charger", ["charger_id", "id"], unique=False)
        batch_op.create_index("ix_command_log_order", ["order_id", "id"], unique=False)
        batch_op.create_index(
            "ix_command_log_request", ["charger_id", "request_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("command_log", schema=None) as batch_op:
        batch_op.drop_index("ix_command_log_request")
        batch_op.drop_index("ix_command_log_order")
        batch_op.drop_index("ix_command_log_charger")
    op.drop_table("command_log")
