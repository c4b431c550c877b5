"""queue lists read in list order off their own indexes; a partial index for merges

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 17:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MERGED = sa.text("merged_into_id IS NOT NULL")


def upgrade() -> None:
    # the composite indexes serve the single-column lookups of the ones they replace
    op.drop_index("ix_conversation_status", table_name="conversation")
    op.drop_index("ix_conversation_assignee_id", table_name="conversation")
    op.drop_index("ix_conversation_merged_into_id", table_name="conversation")
    op.create_index("ix_conversation_status_last", "conversation", ["status", "last_message_at"])
    op.create_index(
        "ix_conversation_status_assignee_last",
        "conversation",
        ["status", "assignee_id", "last_message_at"],
    )
    op.create_index(
        "ix_conversation_assignee_last", "conversation", ["assignee_id", "last_message_at"]
    )
    op.create_index(
        "ix_conversation_merged_into_id",
        "conversation",
        ["merged_into_id"],
        sqlite_where=MERGED,
        postgresql_where=MERGED,
    )


def downgrade() -> None:
    op.drop_index("ix_conversation_merged_into_id", table_name="conversation")
    op.drop_index("ix_conversation_assignee_last", table_name="conversation")
    op.drop_index("ix_conversation_status_assignee_last", table_name="conversation")
    op.drop_index("ix_conversation_status_last", table_name="conversation")
    op.create_index("ix_conversation_merged_into_id", "conversation", ["merged_into_id"])
    op.create_index("ix_conversation_assignee_id", "conversation", ["assignee_id"])
    op.create_index("ix_conversation_status", "conversation", ["status"])
