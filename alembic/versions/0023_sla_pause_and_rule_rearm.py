"""SLA pause while pending, time-based rules re-arm (issue 14)

- `slapolicy.pause_when_pending` (on for every policy, existing ones too): the next-response
  and resolution clocks stand still while a conversation is pending.
- `conversationsla.paused_at`, `next_response_paused_seconds`, `resolution_paused_seconds`:
  since when the clock stands still, and the business time each target spent paused (its due
  time moves later by that much; imapdesk/domain/sla/clock.py).
- `rulefiring.episode_at`, now part of the key: a time-based rule fires once per episode of
  waiting (imapdesk/domain/rules/engine.py). An existing firing gets its `fired_at`: a firing
  counts for every episode that began at or before it, so none fires again after the upgrade.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 11:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_WHEN = sqlmodel.sql.sqltypes.UTCDateTime
_OLD_KEY = ["rule_id", "conversation_id"]
_NEW_KEY = ["rule_id", "conversation_id", "episode_at"]


def _rebuild_rulefiring(key: list[str]) -> None:
    """SQLite: the table again with another primary key (a copy, then swapped in)."""
    columns = [
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("fired_at", _WHEN(), nullable=False),
    ]
    if "episode_at" in key:
        columns.append(sa.Column("episode_at", _WHEN(), nullable=False))
    names = ", ".join(c.name for c in columns)
    op.create_table(
        "_rulefiring_new",
        *columns,
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rule_id"], ["rule.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key),
    )
    op.execute(f"INSERT INTO _rulefiring_new ({names}) SELECT {names} FROM rulefiring")
    op.drop_index("ix_rulefiring_conversation_id", table_name="rulefiring")
    op.drop_table("rulefiring")
    op.rename_table("_rulefiring_new", "rulefiring")
    op.create_index(
        "ix_rulefiring_conversation_id", "rulefiring", ["conversation_id"], unique=False
    )


def upgrade() -> None:
    with op.batch_alter_table("slapolicy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pause_when_pending", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("conversationsla", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_at", _WHEN(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "next_response_paused_seconds", sa.Integer(), nullable=False, server_default="0"
            )
        )
        batch_op.add_column(
            sa.Column("resolution_paused_seconds", sa.Integer(), nullable=False, server_default="0")
        )

    op.add_column("rulefiring", sa.Column("episode_at", _WHEN(), nullable=True))
    op.execute("UPDATE rulefiring SET episode_at = fired_at")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("rulefiring", "episode_at", nullable=False)
        op.drop_constraint("rulefiring_pkey", "rulefiring", type_="primary")
        op.create_primary_key("rulefiring_pkey", "rulefiring", _NEW_KEY)
    else:
        _rebuild_rulefiring(_NEW_KEY)


def downgrade() -> None:
    # one firing per rule and conversation again: the newest stays
    op.execute(
        "DELETE FROM rulefiring WHERE EXISTS (SELECT 1 FROM rulefiring AS newer "
        "WHERE newer.rule_id = rulefiring.rule_id "
        "AND newer.conversation_id = rulefiring.conversation_id "
        "AND newer.episode_at > rulefiring.episode_at)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("rulefiring_pkey", "rulefiring", type_="primary")
        op.drop_column("rulefiring", "episode_at")
        op.create_primary_key("rulefiring_pkey", "rulefiring", _OLD_KEY)
    else:
        _rebuild_rulefiring(_OLD_KEY)
    with op.batch_alter_table("conversationsla", schema=None) as batch_op:
        batch_op.drop_column("resolution_paused_seconds")
        batch_op.drop_column("next_response_paused_seconds")
        batch_op.drop_column("paused_at")
    with op.batch_alter_table("slapolicy", schema=None) as batch_op:
        batch_op.drop_column("pause_when_pending")
