"""network rules: security groups given to servers by role, flavour, instrument and beamtime

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "network_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("security_groups", JSON, nullable=False),
        sa.Column("cloud_id", sa.Integer(), nullable=True),
        sa.Column("roles", JSON, nullable=False),
        sa.Column("flavours", JSON, nullable=False),
        sa.Column("instruments", JSON, nullable=False),
        sa.Column("beamtime", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cloud_id"], ["clouds.id"], name=op.f("fk_network_rules_cloud_id_clouds"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_network_rules_name")),
    )


def downgrade() -> None:
    op.drop_table("network_rules")
