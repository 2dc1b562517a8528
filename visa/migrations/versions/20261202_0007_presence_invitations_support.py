"""live connections (presence), invitation links, support requests; owner-presence settings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _role() -> sa.Enum:
    return sa.Enum("OWNER", "USER", "GUEST", "SUPPORT", name="memberrole", native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "instance_connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.Enum("DESKTOP", "JUPYTER", name="connectionprotocol", native_enum=False,
                                      length=32), nullable=False),
        sa.Column("role", _role(), nullable=False),
        sa.Column("gateway", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_instance_connections_instance_id_instances"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_instance_connections_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_connections")),
    )
    with op.batch_alter_table("instance_connections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_connections_instance_id"), ["instance_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instance_connections_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instance_connections_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "instance_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("role", _role(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_instance_invitations_instance_id_instances"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name=op.f("fk_instance_invitations_created_by_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["used_by_id"], ["users.id"],
                                name=op.f("fk_instance_invitations_used_by_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_instance_invitations_token_hash")),
    )
    with op.batch_alter_table("instance_invitations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_invitations_instance_id"), ["instance_id"], unique=False)

    op.create_table(
        "support_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.Enum("PENDING", "ACCEPTED", "REFUSED", name="supportstate", native_enum=False,
                                   length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prompt_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_by_id", sa.Integer(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_support_requests_instance_id_instances"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["requester_id"], ["users.id"], name=op.f("fk_support_requests_requester_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["answered_by_id"], ["users.id"],
                                name=op.f("fk_support_requests_answered_by_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_requests")),
    )
    with op.batch_alter_table("support_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_support_requests_instance_id"), ["instance_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_support_requests_requester_id"), ["requester_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_support_requests_created_at"), ["created_at"], unique=False)

    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("members_need_owner", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column("members_need_owner", server_default=None)
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unrestricted_member_access", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("unrestricted_member_access")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("members_need_owner")
    op.drop_table("support_requests")
    op.drop_table("instance_invitations")
    op.drop_table("instance_connections")
