"""composer: rich-text composer: inline images, signatures, saved-reply variables (issue 13)

- `draft.html`: what the rich-text composer holds (the text stays in `draft.body`).
- `composeimage`: images pasted or dropped into the composer, uploaded at once and sent as
  inline `cid:` parts (imapdesk/domain/outbound/images.py).
- saved replies: the old single-brace placeholders (`{first_name}`, `{name}`, `{agent}`, ...),
  which were never replaced and went out literally, are rewritten into the variables of the
  new syntax (`{{ customer.first_name }}`, ...: imapdesk/domain/outbound/saved_replies.py).
  Single braces around anything else are left as they are (plain text, not a variable).
  The downgrade writes them back.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 09:05:00
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the old placeholders people wrote, and the variable each one meant
OLD_PLACEHOLDERS = {
    "first_name": "customer.first_name",
    "customer_first_name": "customer.first_name",
    "name": "customer.name",
    "customer_name": "customer.name",
    "customer": "customer.name",
    "agent": "agent.name",
    "agent_name": "agent.name",
    "number": "conversation.number",
    "conversation_number": "conversation.number",
    "ticket": "conversation.number",
    "mailbox": "mailbox.name",
    "mailbox_name": "mailbox.name",
}
_OLD = re.compile(r"(?<!\{)\{\s*([a-z_]+)\s*\}(?!\})")
_NEW = re.compile(r"\{\{ ([a-z_]+\.[a-z_]+) \}\}")


def _forward(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        found = OLD_PLACEHOLDERS.get(m.group(1))
        return "{{ " + found + " }}" if found else m.group(0)

    return _OLD.sub(sub, text)


def _backward(text: str) -> str:
    back = {}
    for old, new in OLD_PLACEHOLDERS.items():
        back.setdefault(new, old)
    return _NEW.sub(
        lambda m: "{" + back[m.group(1)] + "}" if m.group(1) in back else m.group(0), text
    )


def _rewrite(convert) -> None:  # type: ignore[no-untyped-def]
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, body FROM savedreply")).all()
    for row_id, body in rows:
        new = convert(body or "")
        if new != body:
            bind.execute(
                sa.text("UPDATE savedreply SET body = :b WHERE id = :i"), {"b": new, "i": row_id}
            )


def upgrade() -> None:
    with op.batch_alter_table("draft") as batch:
        batch.add_column(sa.Column("html", sa.Text(), nullable=True))
    op.create_table(
        "composeimage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("filename", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_composeimage_agent_created", "composeimage", ["agent_id", "created_at"])
    _rewrite(_forward)


def downgrade() -> None:
    _rewrite(_backward)
    op.drop_index("ix_composeimage_agent_created", table_name="composeimage")
    op.drop_table("composeimage")
    with op.batch_alter_table("draft") as batch:
        batch.drop_column("html")
