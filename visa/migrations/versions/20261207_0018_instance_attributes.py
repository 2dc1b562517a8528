"""instance attributes: keys administrators define, and their values on instances

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attribute_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribute_definitions")),
        sa.UniqueConstraint("key", name=op.f("uq_attribute_definitions_key")),
    )
    op.create_table(
        "instance_attributes",
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("definition_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_instance_attributes_instance_id_instances"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["definition_id"], ["attribute_definitions.id"],
                                name=op.f("fk_instance_attributes_definition_id_attribute_definitions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_id", "definition_id", name=op.f("pk_instance_attributes")),
    )
    with op.batch_alter_table("instance_attributes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_attributes_definition_id"), ["definition_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instance_attributes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_attributes_definition_id"))
    op.drop_table("instance_attributes")
    op.drop_table("attribute_definitions")
