"""Composer preferences and rich replies taken back (issue 13)

- `agent.composer_plain_text`: the web composer opens as a plain text area rather than the
  rich-text editor (the default), set on /account.
- `outboundmail.composed_html`: what the rich-text composer held (sanitised, its pasted images
  as `/compose/images/<id>`): Undo puts it back in the editor, and the images it shows are not
  cleaned up while the mail is unsent.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 11:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "composer_plain_text", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    with op.batch_alter_table("outboundmail", schema=None) as batch_op:
        batch_op.add_column(sa.Column("composed_html", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outboundmail", schema=None) as batch_op:
        batch_op.drop_column("composed_html")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("composer_plain_text")
