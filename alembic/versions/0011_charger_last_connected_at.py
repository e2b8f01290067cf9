"""ticketing_chargers.last_connected_at: when the charger last connected (its latest ChargerOnline or ChargerConnected)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticketing_chargers") as batch:
        batch.add_column(sa.Column("last_connected_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ticketing_chargers") as batch:
        batch.drop_column("last_connected_at")
