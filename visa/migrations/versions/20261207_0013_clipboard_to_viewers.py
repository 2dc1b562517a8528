"""the owner's policy on the desktop clipboard: pushed to view-only members or not

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not pushed to viewers unless the owner says so, for machines made before too.
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("clipboard_to_viewers", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("clipboard_to_viewers")
