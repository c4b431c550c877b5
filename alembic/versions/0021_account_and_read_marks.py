"""account and read marks: the agent's account (timezone), per-agent read marks (issue 13)

- `agent.timezone`: the IANA zone the web UI shows the agent's times in (None: UTC).
- `agent.read_marks_since`: per-agent read marks count from here; existing agents start now,
  so that what they had before keeps the mailbox's shared `\\Seen`.
- `conversationreadmark`: when an agent last read a conversation in the web UI.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 09:05:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(
            sa.Column("read_marks_since", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    agent = sa.table("agent", sa.column("read_marks_since", sqlmodel.sql.sqltypes.UTCDateTime()))
    op.execute(agent.update().values(read_marks_since=datetime.now(UTC)))
    op.create_table(
        "conversationreadmark",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("read_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", "conversation_id"),
    )
    op.create_index(
        "ix_conversationreadmark_conversation_id",
        "conversationreadmark",
        ["conversation_id"],
        unique=False,
    )
    op.create_index(
        "ix_conversationreadmark_agent_read",
        "conversationreadmark",
        ["agent_id", "read_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_conversationreadmark_agent_read", table_name="conversationreadmark")
    op.drop_index("ix_conversationreadmark_conversation_id", table_name="conversationreadmark")
    op.drop_table("conversationreadmark")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("read_marks_since")
        batch_op.drop_column("timezone")
