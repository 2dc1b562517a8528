"""public view-only links to an instance's desktop

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_view_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_instance_view_links_instance_id_instances"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name=op.f("fk_instance_view_links_created_by_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_view_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_instance_view_links_token_hash")),
    )
    with op.batch_alter_table("instance_view_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_view_links_instance_id"), ["instance_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instance_view_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_view_links_instance_id"))
    op.drop_table("instance_view_links")
