"""message log: answers share the row of the frame they answer; no index on time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message_log") as batch:
        batch.add_column(sa.Column("reply", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reply_type", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reply_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_index("ix_message_log_at")


def downgrade() -> None:
    with op.batch_alter_table("message_log") as batch:
        batch.create_index("ix_message_log_at", ["at"])
        batch.drop_column("reply_at")
        batch.drop_column("reply_type")
        batch.drop_column("reply")
