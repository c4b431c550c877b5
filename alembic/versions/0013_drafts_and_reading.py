"""drafts, and whether opening a conversation marks it read (issue 13)

- `draft`: what an agent is writing in a conversation (one per agent and conversation), saved
  as they type so that a reload, a closed tab or another device loses nothing.
- `mailbox.mark_read_on_open`: opening a conversation in the web UI marks it read (`\\Seen`
  for everyone on the box); on for every existing mailbox, as for new ones.
- `ix_conversation_queue` gains `claimed`: Unassigned leaves out what a mail client claimed
  (`\\Flagged` without an assignee), and its count still reads the index alone.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_QUEUE_INDEX = "ix_conversation_queue"
_QUEUE_COLUMNS = ["status", "mailbox_id", "assignee_id", "merged_into_id"]


def upgrade() -> None:
    op.create_table(
        "draft",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("to", sa.JSON(), nullable=True),
        sa.Column("cc", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", "agent_id"),
    )
    with op.batch_alter_table("draft", schema=None) as batch_op:
        batch_op.create_index("ix_draft_agent_created", ["agent_id", "created_at"], unique=False)
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mark_read_on_open", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    # plain statements, not a batch: SQLite needs no copy of the table for an index
    op.drop_index(_QUEUE_INDEX, table_name="conversation")
    op.create_index(_QUEUE_INDEX, "conversation", [*_QUEUE_COLUMNS, "claimed"], unique=False)


def downgrade() -> None:
    op.drop_index(_QUEUE_INDEX, table_name="conversation")
    op.create_index(_QUEUE_INDEX, "conversation", _QUEUE_COLUMNS, unique=False)
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.drop_column("mark_read_on_open")
    with op.batch_alter_table("draft", schema=None) as batch_op:
        batch_op.drop_index("ix_draft_agent_created")
    op.drop_table("draft")
