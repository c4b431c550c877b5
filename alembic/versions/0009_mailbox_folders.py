"""per-mailbox folder names (issue 12)

`mailbox.folder_names` holds the folder the admin set for each role of the mapping (pending,
archive, junk, trash, notes, sent); a role not set is found on the server. The server's
namespace and the folders chosen live in `mailbox.capabilities`, written at each connect.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("folder_names", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.drop_column("folder_names")
