"""users' unix identity: unique uids, supplementary groups, the source of the identity

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extra_gids", json, nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("posix_source", sa.String(length=16), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_users_uid_number"), ["uid_number"])
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("extra_gids", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_uid_number"), type_="unique")
        batch_op.drop_column("posix_source")
        batch_op.drop_column("extra_gids")
