"""each instance records its home: its own, or the owner's shared home (and whether members may act there)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Machines made before run on the owner's shared home, where members must not act: the safe reading.
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("home", sa.String(8), nullable=False, server_default="shared"))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("home")
