"""connector_state.fault_event_id: the FaultRaised id of the report that set the state

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connector_state") as batch:
        batch.add_column(sa.Column("fault_event_id", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connector_state") as batch:
        batch.drop_column("fault_event_id")
