"""browser sessions stored server-side: sign-out, deactivation and a new password end them

`browsersession` holds one row per signed-in browser (the hash of the cookie's random key).
Cookies from before this revision carry no key: those browsers sign in once more.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "browsersession",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("password_stamp", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("user_agent", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("client_address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("browsersession", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_browsersession_agent_id"), ["agent_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("browsersession", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_browsersession_agent_id"))
    op.drop_table("browsersession")
