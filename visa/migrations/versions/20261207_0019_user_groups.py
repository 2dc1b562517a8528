"""user groups (made by administrators or from the identity provider), named by flavour limits,
lifetimes and network rules

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 13:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "user_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_user_groups_name")),
    )
    op.create_table(
        "group_memberships",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Enum("ADMIN", "IDP", name="groupsource", native_enum=False, length=8), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["user_groups.id"],
                                name=op.f("fk_group_memberships_group_id_user_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_group_memberships_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_memberships")),
    )
    with op.batch_alter_table("group_memberships", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_group_memberships_user_id"), ["user_id"], unique=False)
    # Existing flavours and rules name no group.
    with op.batch_alter_table("flavours", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limit_groups", JSON, nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column("group_lifetimes", JSON, nullable=False, server_default=sa.text("'{}'")))
    with op.batch_alter_table("flavours", schema=None) as batch_op:
        batch_op.alter_column("limit_groups", server_default=None)
        batch_op.alter_column("group_lifetimes", server_default=None)
    with op.batch_alter_table("network_rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("groups", JSON, nullable=False, server_default=sa.text("'[]'")))
    with op.batch_alter_table("network_rules", schema=None) as batch_op:
        batch_op.alter_column("groups", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("network_rules", schema=None) as batch_op:
        batch_op.drop_column("groups")
    with op.batch_alter_table("flavours", schema=None) as batch_op:
        batch_op.drop_column("group_lifetimes")
        batch_op.drop_column("limit_groups")
    with op.batch_alter_table("group_memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_group_memberships_user_id"))
    op.drop_table("group_memberships")
    op.drop_table("user_groups")
