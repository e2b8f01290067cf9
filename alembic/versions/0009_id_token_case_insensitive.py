"""id_tokens: unique on upper(token); OCPP idTag/idToken is a CiString (case-insensitive)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_id_tokens_upper_token"


def upgrade() -> None:
    clashes = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT upper(token) FROM id_tokens GROUP BY upper(token) HAVING count(*) > 1"
            )
        )
        .scalars()
        .all()
    )
    if clashes:
        # Decision: refuse rather than pick a survivor; which row is right is the operator's call
        raise RuntimeError(
            "id tokens differing only in case must be merged or deleted first: "
            + ", ".join(sorted(clashes))
        )
    op.create_index(INDEX, "id_tokens", [sa.text("upper(token)")], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="id_tokens")
