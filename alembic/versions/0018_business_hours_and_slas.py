"""business hours and slas: business-hours calendars, SLA policies, due times per conversation (issue 14)

- `businesscalendar`: weekly opening hours, holidays and a timezone
  (imapdesk/domain/sla/business_hours.py).
- `slapolicy`: first response, next response and resolution targets in business minutes for a
  mailbox, a team or a tag, with a calendar (imapdesk/domain/sla/policies.py).
- `conversationsla`: each conversation's due times, attainment and the warning and breach
  markers the SLA clock sets with its events (imapdesk/domain/sla/clock.py). Nothing is
  backfilled: the clock starts with the conversations created after the upgrade.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "businesscalendar",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hours", sa.JSON(), nullable=True),
        sa.Column("holidays", sa.JSON(), nullable=True),
        sa.Column("created_at", _WHEN(), nullable=False),
        sa.Column("updated_at", _WHEN(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "slapolicy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("calendar_id", sa.Integer(), nullable=True),
        sa.Column("first_response_minutes", sa.Integer(), nullable=True),
        sa.Column("next_response_minutes", sa.Integer(), nullable=True),
        sa.Column("resolution_minutes", sa.Integer(), nullable=True),
        sa.Column("warning_minutes", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN(), nullable=False),
        sa.Column("updated_at", _WHEN(), nullable=False),
        sa.ForeignKeyConstraint(["calendar_id"], ["businesscalendar.id"]),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_slapolicy_mailbox_id", "slapolicy", ["mailbox_id"], unique=False)
    op.create_index("ix_slapolicy_team_id", "slapolicy", ["team_id"], unique=False)
    op.create_index("ix_slapolicy_tag", "slapolicy", ["tag"], unique=False)
    op.create_table(
        "conversationsla",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=True),
        sa.Column("first_response_started_at", _WHEN(), nullable=True),
        sa.Column("first_response_due", _WHEN(), nullable=True),
        sa.Column("first_response_at", _WHEN(), nullable=True),
        sa.Column("first_response_met", sa.Boolean(), nullable=True),
        sa.Column("first_response_warned", sa.Boolean(), nullable=False),
        sa.Column("first_response_breached", sa.Boolean(), nullable=False),
        sa.Column("next_response_started_at", _WHEN(), nullable=True),
        sa.Column("next_response_due", _WHEN(), nullable=True),
        sa.Column("next_response_warned", sa.Boolean(), nullable=False),
        sa.Column("next_response_breached", sa.Boolean(), nullable=False),
        sa.Column("resolution_started_at", _WHEN(), nullable=True),
        sa.Column("resolution_due", _WHEN(), nullable=True),
        sa.Column("resolved_at", _WHEN(), nullable=True),
        sa.Column("resolution_met", sa.Boolean(), nullable=True),
        sa.Column("resolution_warned", sa.Boolean(), nullable=False),
        sa.Column("resolution_breached", sa.Boolean(), nullable=False),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("next_due_at", _WHEN(), nullable=True),
        sa.Column("check_at", _WHEN(), nullable=True),
        sa.Column("updated_at", _WHEN(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["policy_id"], ["slapolicy.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    op.create_index(
        "ix_conversationsla_next_due",
        "conversationsla",
        ["next_due_at", "conversation_id"],
        unique=False,
    )
    op.create_index("ix_conversationsla_check", "conversationsla", ["check_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_conversationsla_check", table_name="conversationsla")
    op.drop_index("ix_conversationsla_next_due", table_name="conversationsla")
    op.drop_table("conversationsla")
    op.drop_index("ix_slapolicy_tag", table_name="slapolicy")
    op.drop_index("ix_slapolicy_team_id", table_name="slapolicy")
    op.drop_index("ix_slapolicy_mailbox_id", table_name="slapolicy")
    op.drop_table("slapolicy")
    op.drop_table("businesscalendar")
