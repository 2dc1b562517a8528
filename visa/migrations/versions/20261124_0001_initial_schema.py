"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 18:59:09.691092
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clouds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clouds")),
        sa.UniqueConstraint("name", name=op.f("uq_clouds_name")),
    )
    op.create_table(
        "instruments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruments")),
        sa.UniqueConstraint("name", name=op.f("uq_instruments_name")),
    )
    op.create_table(
        "proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("public_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proposals")),
        sa.UniqueConstraint("identifier", name=op.f("uq_proposals_identifier")),
    )
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_lease")),
    )
    op.create_table(
        "sent_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_emails")),
        sa.UniqueConstraint("key", name=op.f("uq_sent_emails_key")),
    )
    op.create_table(
        "system_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "level",
            sa.Enum("INFO", "WARNING", "ERROR", name="notificationlevel", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "kind",
            sa.Enum("BANNER", "MODAL", name="notificationkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("active_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_notifications")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("uid_number", sa.Integer(), nullable=True),
        sa.Column("gid_number", sa.Integer(), nullable=True),
        sa.Column("home_path", sa.String(length=255), nullable=True),
        sa.Column("instance_quota", sa.Integer(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("external_id", name=op.f("uq_users_external_id")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_audit_events_actor_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_actor_id"), ["actor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)

    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("proposal_id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_experiments_instrument_id_instruments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["proposals.id"],
            name=op.f("fk_experiments_proposal_id_proposals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("external_id", name=op.f("uq_experiments_external_id")),
    )
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiments_instrument_id"), ["instrument_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_experiments_proposal_id"), ["proposal_id"], unique=False)

    op.create_table(
        "flavours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_kind", sa.String(length=64), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("cloud_flavour_ref", sa.String(length=255), nullable=False),
        sa.Column("cloud_id", sa.Integer(), nullable=True),
        sa.Column("visible", sa.Boolean(), nullable=False),
        sa.CheckConstraint("cores > 0", name=op.f("ck_flavours_cores_positive")),
        sa.CheckConstraint("gpu_count >= 0", name=op.f("ck_flavours_gpu_count_non_negative")),
        sa.CheckConstraint("memory_mb > 0", name=op.f("ck_flavours_memory_positive")),
        sa.ForeignKeyConstraint(
            ["cloud_id"], ["clouds.id"], name=op.f("fk_flavours_cloud_id_clouds"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flavours")),
        sa.UniqueConstraint("name", name=op.f("uq_flavours_name")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("icon", sa.String(length=64), nullable=True),
        sa.Column("cloud_image_ref", sa.String(length=255), nullable=False),
        sa.Column("cloud_id", sa.Integer(), nullable=True),
        sa.Column("visible", sa.Boolean(), nullable=False),
        sa.Column(
            "autoaccept_extension",
            sa.Enum("ALL", "STAFF", "NONE", name="autoaccept", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "options",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["cloud_id"], ["clouds.id"], name=op.f("fk_images_cloud_id_clouds"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("name", name=op.f("uq_images_name")),
    )
    op.create_table(
        "instrument_scientists",
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_instrument_scientists_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_instrument_scientists_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("instrument_id", "user_id", name=op.f("pk_instrument_scientists")),
    )
    with op.batch_alter_table("instrument_scientists", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instrument_scientists_user_id"), ["user_id"], unique=False)

    op.create_table(
        "notification_acks",
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["system_notifications.id"],
            name=op.f("fk_notification_acks_notification_id_system_notifications"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notification_acks_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("notification_id", "user_id", name=op.f("pk_notification_acks")),
    )
    op.create_table(
        "role_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "ADMIN",
                "STAFF",
                "IT_SUPPORT",
                "INSTRUMENT_SCIENTIST",
                "INSTRUMENT_CONTROL",
                "SCIENTIFIC_COMPUTING",
                "GUEST",
                name="role",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["granted_by_id"],
            ["users.id"],
            name=op.f("fk_role_grants_granted_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_role_grants_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grants")),
        sa.UniqueConstraint("user_id", "role", name=op.f("uq_role_grants_user_id")),
    )
    with op.batch_alter_table("role_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_role_grants_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_role_grants_user_id"), ["user_id"], unique=False)

    op.create_table(
        "experiment_members",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_members_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_experiment_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("experiment_id", "user_id", name=op.f("pk_experiment_members")),
    )
    with op.batch_alter_table("experiment_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiment_members_user_id"), ["user_id"], unique=False)

    op.create_table(
        "flavour_lifetimes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flavour_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "ADMIN",
                "STAFF",
                "IT_SUPPORT",
                "INSTRUMENT_SCIENTIST",
                "INSTRUMENT_CONTROL",
                "SCIENTIFIC_COMPUTING",
                "GUEST",
                name="role",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("lifetime_hours", sa.Integer(), nullable=False),
        sa.CheckConstraint("lifetime_hours > 0", name=op.f("ck_flavour_lifetimes_lifetime_positive")),
        sa.ForeignKeyConstraint(
            ["flavour_id"],
            ["flavours.id"],
            name=op.f("fk_flavour_lifetimes_flavour_id_flavours"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flavour_lifetimes")),
        sa.UniqueConstraint("flavour_id", "role", name=op.f("uq_flavour_lifetimes_flavour_id")),
    )
    with op.batch_alter_table("flavour_lifetimes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flavour_lifetimes_flavour_id"), ["flavour_id"], unique=False)

    op.create_table(
        "flavour_limits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flavour_id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "ADMIN",
                "STAFF",
                "IT_SUPPORT",
                "INSTRUMENT_SCIENTIST",
                "INSTRUMENT_CONTROL",
                "SCIENTIFIC_COMPUTING",
                "GUEST",
                name="role",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.CheckConstraint(
            "(instrument_id IS NULL) <> (role IS NULL)", name=op.f("ck_flavour_limits_one_target")
        ),
        sa.ForeignKeyConstraint(
            ["flavour_id"],
            ["flavours.id"],
            name=op.f("fk_flavour_limits_flavour_id_flavours"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_flavour_limits_instrument_id_instruments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flavour_limits")),
        sa.UniqueConstraint("flavour_id", "instrument_id", "role", name=op.f("uq_flavour_limits_flavour_id")),
    )
    with op.batch_alter_table("flavour_limits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flavour_limits_flavour_id"), ["flavour_id"], unique=False)

    op.create_table(
        "image_protocols",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column(
            "protocol",
            sa.Enum("VNC", "JUPYTER", "RDP", "SSH", name="protocol", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("optional", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_image_protocols_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_protocols")),
        sa.UniqueConstraint("image_id", "protocol", name=op.f("uq_image_protocols_image_id")),
    )
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("flavour_id", sa.Integer(), nullable=False),
        sa.Column("preset", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flavour_id"], ["flavours.id"], name=op.f("fk_plans_flavour_id_flavours"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_plans_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("image_id", "flavour_id", name=op.f("uq_plans_image_id")),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("comments", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("cloud_id", sa.Integer(), nullable=False),
        sa.Column("cloud_server_id", sa.String(length=255), nullable=True),
        sa.Column("address", sa.String(length=255), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "BUILDING",
                "STARTING",
                "ACTIVE",
                "PARTIALLY_ACTIVE",
                "STOPPING",
                "STOPPED",
                "REBOOTING",
                "MIGRATING",
                "ACTIVE_MIGRATING",
                "DELETING",
                "DELETED",
                "ERROR",
                "UNAVAILABLE",
                "UNKNOWN",
                name="instancestate",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("screen_width", sa.Integer(), nullable=False),
        sa.Column("screen_height", sa.Integer(), nullable=False),
        sa.Column("keyboard_layout", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column(
            "provider_state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terminates_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_interaction_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_compute_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifetime_warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inactivity_warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cloud_id"], ["clouds.id"], name=op.f("fk_instances_cloud_id_clouds"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_instances_owner_id_users"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_instances_plan_id_plans"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("uid", name=op.f("uq_instances_uid")),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_cloud_id"), ["cloud_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_cloud_server_id"), ["cloud_server_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_deleted_at"), ["deleted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_plan_id"), ["plan_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_terminates_at"), ["terminates_at"], unique=False)

    op.create_table(
        "connect_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("OWNER", "USER", "GUEST", "SUPPORT", name="memberrole", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_connect_tokens_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_connect_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connect_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_connect_tokens_token_hash")),
    )
    with op.batch_alter_table("connect_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connect_tokens_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_connect_tokens_instance_id"), ["instance_id"], unique=False)

    op.create_table(
        "extension_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=True),
        sa.Column("requested_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("PENDING", "ACCEPTED", "REFUSED", name="extensionstate", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("handled_by_id", sa.Integer(), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["handled_by_id"],
            ["users.id"],
            name=op.f("fk_extension_requests_handled_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_extension_requests_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"],
            ["users.id"],
            name=op.f("fk_extension_requests_requester_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extension_requests")),
    )
    with op.batch_alter_table("extension_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_extension_requests_instance_id"), ["instance_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_extension_requests_state"), ["state"], unique=False)

    op.create_table(
        "instance_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column(
            "action",
            sa.Enum(
                "CREATE",
                "START",
                "STOP",
                "REBOOT",
                "DELETE",
                name="commandaction",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "PENDING", "RUNNING", "DONE", "FAILED", name="commandstate", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_instance_commands_actor_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_commands_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_commands")),
    )
    with op.batch_alter_table("instance_commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_commands_instance_id"), ["instance_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instance_commands_state"), ["state"], unique=False)

    op.create_table(
        "instance_experiments",
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_instance_experiments_experiment_id_experiments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_experiments_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "experiment_id", name=op.f("pk_instance_experiments")),
    )
    with op.batch_alter_table("instance_experiments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_experiments_experiment_id"), ["experiment_id"], unique=False
        )

    op.create_table(
        "instance_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("OWNER", "USER", "GUEST", "SUPPORT", name="memberrole", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_members_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_instance_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_members")),
        sa.UniqueConstraint("instance_id", "user_id", name=op.f("uq_instance_members_instance_id")),
    )
    with op.batch_alter_table("instance_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_members_instance_id"), ["instance_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instance_members_user_id"), ["user_id"], unique=False)

    op.create_table(
        "instance_thumbnails",
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_thumbnails_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_instance_thumbnails")),
    )


def downgrade() -> None:
    op.drop_table("instance_thumbnails")
    with op.batch_alter_table("instance_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_members_user_id"))
        batch_op.drop_index(batch_op.f("ix_instance_members_instance_id"))

    op.drop_table("instance_members")
    with op.batch_alter_table("instance_experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_experiments_experiment_id"))

    op.drop_table("instance_experiments")
    with op.batch_alter_table("instance_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_commands_state"))
        batch_op.drop_index(batch_op.f("ix_instance_commands_instance_id"))

    op.drop_table("instance_commands")
    with op.batch_alter_table("extension_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extension_requests_state"))
        batch_op.drop_index(batch_op.f("ix_extension_requests_instance_id"))

    op.drop_table("extension_requests")
    with op.batch_alter_table("connect_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connect_tokens_instance_id"))
        batch_op.drop_index(batch_op.f("ix_connect_tokens_expires_at"))

    op.drop_table("connect_tokens")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_terminates_at"))
        batch_op.drop_index(batch_op.f("ix_instances_state"))
        batch_op.drop_index(batch_op.f("ix_instances_plan_id"))
        batch_op.drop_index(batch_op.f("ix_instances_owner_id"))
        batch_op.drop_index(batch_op.f("ix_instances_deleted_at"))
        batch_op.drop_index(batch_op.f("ix_instances_cloud_server_id"))
        batch_op.drop_index(batch_op.f("ix_instances_cloud_id"))

    op.drop_table("instances")
    op.drop_table("plans")
    op.drop_table("image_protocols")
    with op.batch_alter_table("flavour_limits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flavour_limits_flavour_id"))

    op.drop_table("flavour_limits")
    with op.batch_alter_table("flavour_lifetimes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flavour_lifetimes_flavour_id"))

    op.drop_table("flavour_lifetimes")
    with op.batch_alter_table("experiment_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiment_members_user_id"))

    op.drop_table("experiment_members")
    with op.batch_alter_table("role_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_grants_user_id"))
        batch_op.drop_index(batch_op.f("ix_role_grants_expires_at"))

    op.drop_table("role_grants")
    op.drop_table("notification_acks")
    with op.batch_alter_table("instrument_scientists", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instrument_scientists_user_id"))

    op.drop_table("instrument_scientists")
    op.drop_table("images")
    op.drop_table("flavours")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiments_proposal_id"))
        batch_op.drop_index(batch_op.f("ix_experiments_instrument_id"))

    op.drop_table("experiments")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_action"))

    op.drop_table("audit_events")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("system_notifications")
    op.drop_table("sent_emails")
    op.drop_table("scheduler_lease")
    op.drop_table("proposals")
    op.drop_table("instruments")
    op.drop_table("clouds")
