"""web services an image declares besides JupyterLab, each served on a user-content host of its own

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Existing images declare none.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("web_services", JSON, nullable=False, server_default=sa.text("'[]'")))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column("web_services", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("web_services")
