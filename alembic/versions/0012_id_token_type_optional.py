"""id_tokens.type is optional: a token without a type matches whatever type a 2.0.1 station
reports; one with a type matches only that type. Tokens of the old default type ISO14443
become typeless (which of them an operator typed on purpose cannot be told, and until now
no type was compared), so no token that was accepted before is refused after the upgrade.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: 0009's index on upper(token): SQLite's batch copy of the table cannot reflect an
#: expression index and would drop it, so it is dropped and made again around the change
INDEX = "uq_id_tokens_upper_token"


def _set_nullable(nullable: bool) -> None:
    op.drop_index(INDEX, table_name="id_tokens")
    with op.batch_alter_table("id_tokens") as batch:
        batch.alter_column("type", existing_type=sa.String(length=20), nullable=nullable)
    op.create_index(INDEX, "id_tokens", [sa.text("upper(token)")], unique=True)


def upgrade() -> None:
    _set_nullable(True)
    op.execute("UPDATE id_tokens SET type = NULL WHERE type = 'ISO14443'")


def downgrade() -> None:
    op.execute("UPDATE id_tokens SET type = 'ISO14443' WHERE type IS NULL")
    _set_nullable(False)
