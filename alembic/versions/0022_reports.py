"""Reports (issue 14 item 6)

An index on the event log by conversation and time: the reports read the events of the
conversations answered or closed in a range (imapdesk/domain/reports/figures.py).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 11:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_event_conversation_created", "event", ["conversation_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_event_conversation_created", table_name="event")
