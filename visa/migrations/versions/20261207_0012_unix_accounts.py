"""the unix account of visa's host each user's local sessions run as (name and uid, each one user's)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unix_account", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("unix_account_uid", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_users_unix_account"), ["unix_account"])
        batch_op.create_unique_constraint(batch_op.f("uq_users_unix_account_uid"), ["unix_account_uid"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_unix_account_uid"), type_="unique")
        batch_op.drop_constraint(batch_op.f("uq_users_unix_account"), type_="unique")
        batch_op.drop_column("unix_account_uid")
        batch_op.drop_column("unix_account")
