"""teams and rules: teams, agent availability and capacity, automation rules (issue 14)

- `team`, `teammember`: teams of agents and how their work is shared (round robin, with the
  last agent who got one kept on the team's row; or least busy); `teammailbox`: a mailbox's
  default team, whose next agent gets the mailbox's new conversations.
- `agentavailability`: an agent's availability switch and capacity (no row: available, no
  limit).
- `rule`: ordered automation rules (trigger, conditions, actions as JSON; stop here);
  `rulefiring`: a time-based rule fired for a conversation (it fires once);
  `autoreplylog`: the last automatic reply to a customer from a mailbox (one per window).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DT = sqlmodel.sql.sqltypes.UTCDateTime
_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "team",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _S(length=200), nullable=False),
        sa.Column("strategy", _S(length=20), nullable=False),
        sa.Column("calendar_id", sa.Integer(), nullable=True),
        sa.Column("last_agent_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _DT(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "teammember",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "agent_id"),
    )
    op.create_index("ix_teammember_agent_id", "teammember", ["agent_id"], unique=False)
    op.create_table(
        "teammailbox",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mailbox_id"),
    )
    op.create_index("ix_teammailbox_team_id", "teammailbox", ["team_id"], unique=False)
    op.create_table(
        "agentavailability",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("updated_at", _DT(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id"),
    )
    op.create_table(
        "rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _S(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger", _S(length=60), nullable=False),
        sa.Column("trigger_amount", sa.Integer(), nullable=True),
        sa.Column("match", _S(length=3), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=True),
        sa.Column("actions", sa.JSON(), nullable=True),
        sa.Column("stop", sa.Boolean(), nullable=False),
        sa.Column("created_at", _DT(), nullable=False),
        sa.Column("updated_at", _DT(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_rule_position", "rule", ["position"], unique=False)
    op.create_table(
        "rulefiring",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("fired_at", _DT(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rule_id"], ["rule.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rule_id", "conversation_id"),
    )
    op.create_index(
        "ix_rulefiring_conversation_id", "rulefiring", ["conversation_id"], unique=False
    )
    op.create_table(
        "autoreplylog",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("customer_email", _S(length=320), nullable=False),
        sa.Column("sent_at", _DT(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mailbox_id", "customer_email"),
    )


def downgrade() -> None:
    op.drop_table("autoreplylog")
    op.drop_index("ix_rulefiring_conversation_id", table_name="rulefiring")
    op.drop_table("rulefiring")
    op.drop_index("ix_rule_position", table_name="rule")
    op.drop_table("rule")
    op.drop_table("agentavailability")
    op.drop_index("ix_teammailbox_team_id", table_name="teammailbox")
    op.drop_table("teammailbox")
    op.drop_index("ix_teammember_agent_id", table_name="teammember")
    op.drop_table("teammember")
    op.drop_table("team")
