"""experiment links: the data's DOI, the data portal's and the e-logbook's pages

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("doi", sa.String(255), nullable=True))
        batch.add_column(sa.Column("data_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("logbook_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("logbook_url")
        batch.drop_column("data_url")
        batch.drop_column("doi")
