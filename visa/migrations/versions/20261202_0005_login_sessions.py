"""server-side login sessions; identities keyed by issuer and subject; roles from the provider

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("refresh_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idp_roles", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_login_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_login_sessions")),
    )
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_sessions_expires_at"), ["expires_at"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity_issuer", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("idp_roles", sa.String(length=255), nullable=False, server_default=""))
        batch_op.drop_constraint("uq_users_external_id", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_users_identity_issuer"), ["identity_issuer", "external_id"]
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("idp_roles", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_identity_issuer"), type_="unique")
        batch_op.create_unique_constraint("uq_users_external_id", ["external_id"])
        batch_op.drop_column("idp_roles")
        batch_op.drop_column("identity_issuer")
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_login_sessions_user_id"))
    op.drop_table("login_sessions")
