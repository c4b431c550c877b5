"""delivery state and undo window of outbound mail (issue 13)

- `outboundmail.state` gains `scheduled` (a reply held for its undo window). On PostgreSQL
  the enum type `outboundstate` gets the value; on SQLite the column is a VARCHAR and is made
  wide enough for it.
- `agent.undo_send_seconds`: how long the agent's replies wait before they go out (10 s for
  every agent, as for new ones; 0 sends at once).
- `mailbox.smtputf8`: whether the SMTP server offered SMTPUTF8 when last used (unknown for
  existing mailboxes until the sender next connects).

Existing rows keep their state: nothing queued before was meant to wait. A queued reply that
failed only because its address could not be encoded in ASCII (an international domain) is
made due at once, since the sender now writes such a domain in its IDNA form.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = ("queued", "sending", "sent", "failed")
_NEW_STATES = ("scheduled", *_OLD_STATES)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # allowed inside the migration's transaction; the value is first used after it
        op.execute("ALTER TYPE outboundstate ADD VALUE IF NOT EXISTS 'scheduled' BEFORE 'queued'")
    else:
        with op.batch_alter_table("outboundmail", schema=None) as batch_op:
            batch_op.alter_column(
                "state",
                existing_type=sa.Enum(*_OLD_STATES, name="outboundstate"),
                type_=sa.Enum(*_NEW_STATES, name="outboundstate"),
                existing_nullable=False,
            )
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("undo_send_seconds", sa.Integer(), nullable=False, server_default="10")
        )
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("smtputf8", sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE outboundmail SET next_attempt_at = NULL "
        "WHERE state = 'queued' AND last_error LIKE '%codec can''t encode%'"
    )


def downgrade() -> None:
    bind = op.get_bind()
    # a reply in its undo window is sent at once by the older sender
    op.execute("UPDATE outboundmail SET state = 'queued' WHERE state = 'scheduled'")
    with op.batch_alter_table("mailbox", schema=None) as batch_op:
        batch_op.drop_column("smtputf8")
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("undo_send_seconds")
    if bind.dialect.name == "postgresql":
        # PostgreSQL cannot drop an enum value: the type is made again without it
        op.execute("ALTER TYPE outboundstate RENAME TO outboundstate_0012")
        op.execute(f"CREATE TYPE outboundstate AS ENUM {_OLD_STATES!r}")
        op.execute(
            "ALTER TABLE outboundmail ALTER COLUMN state TYPE outboundstate "
            "USING state::text::outboundstate"
        )
        op.execute("DROP TYPE outboundstate_0012")
    else:
        with op.batch_alter_table("outboundmail", schema=None) as batch_op:
            batch_op.alter_column(
                "state",
                existing_type=sa.Enum(*_NEW_STATES, name="outboundstate"),
                type_=sa.Enum(*_OLD_STATES, name="outboundstate"),
                existing_nullable=False,
            )
