"""outbound mail and notes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 13:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SOURCES = ("web", "api", "imap", "system")
_STATES = ("queued", "sending", "sent", "failed")


def upgrade() -> None:
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("display_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("from_agent_name", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "status_after_reply",
                sqlmodel.sql.sqltypes.AutoString(length=20),
                nullable=False,
                server_default="pending",
            )
        )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("added_version", sa.Integer(), nullable=True))

    # the type exists since 0002 on PostgreSQL
    source = sa.Enum(*_SOURCES, name="activitysource").with_variant(
        postgresql.ENUM(*_SOURCES, name="activitysource", create_type=False), "postgresql"
    )
    op.create_table(
        "outboundmail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("answered_message_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("source", source, nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("msgid", sqlmodel.sql.sqltypes.AutoString(length=998), nullable=False),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("envelope_from", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.Enum(*_STATES, name="outboundstate"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("final_dot_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("smtp_response", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("copy_folder", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("copy_uid", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["answered_message_id"], ["message.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["message.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "idempotency_key"),
    )
    with op.batch_alter_table("outboundmail", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbound_mail_mailbox_state", ["mailbox_id", "state", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_outboundmail_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_outboundmail_message_id"), ["message_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outboundmail_msgid"), ["msgid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outboundmail", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outboundmail_msgid"))
        batch_op.drop_index(batch_op.f("ix_outboundmail_message_id"))
        batch_op.drop_index(batch_op.f("ix_outboundmail_conversation_id"))
        batch_op.drop_index("ix_outbound_mail_mailbox_state")
    op.drop_table("outboundmail")
    sa.Enum(name="outboundstate").drop(op.get_bind(), checkfirst=True)
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("added_version")
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.drop_column("status_after_reply")
        batch_op.drop_column("from_agent_name")
        batch_op.drop_column("signature")
        batch_op.drop_column("display_name")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("signature")
