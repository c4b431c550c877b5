"""customers: a note per customer and organisations by domain (issue 13)

- `customer`: one row per address a conversation is with (`conversation.customer_email`),
  with the latest name, the organisation its domain names (none for free-mail providers), the
  agents' note and its version; filled here from the existing conversations
  (`imapdesk.domain.customers.directory.backfill`), then kept in step by the ingest.
- `customernoteedit`: every change of a note (who, from where, the note it left).
- `ix_conversation_customer` (address, mailbox) replaces `ix_conversation_customer_email`.
- `attachment.unpacked_from`, `attachment.unpack_error`: the files unpacked from a winmail.dat
  (TNEF) name the original's sha256; a winmail.dat that could not be unpacked says why.
  Attachments taken in before stay as they were (a rebuild unpacks them).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from imapdesk.domain.customers.directory import backfill

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", _text(320), nullable=False),
        sa.Column("name", _text(300), nullable=True),
        sa.Column("organisation", _text(255), nullable=True),
        sa.Column("search_key", _text(700), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("note_version", sa.Integer(), nullable=False),
        sa.Column("note_updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("note_updated_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["note_updated_by_id"], ["agent.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_organisation"), ["organisation"], unique=False
        )
    op.create_table(
        "customernoteedit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column(
            "source",
            sa.Enum(
                "web", "api", "imap", "system", name="activitysource", native_enum=False, length=20
            ),
            nullable=False,
        ),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("customernoteedit", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customernoteedit_customer_created", ["customer_id", "created_at"], unique=False
        )
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unpacked_from", _text(64), nullable=True))
        batch_op.add_column(sa.Column("unpack_error", sa.Text(), nullable=True))
    # a customer's conversations in an agent's mailboxes: without the mailbox in the index,
    # the planners read a whole mailbox's conversations for each customer
    op.create_index(
        "ix_conversation_customer", "conversation", ["customer_email", "mailbox_id"], unique=False
    )
    op.drop_index("ix_conversation_customer_email", table_name="conversation")
    backfill(op.get_bind())


def downgrade() -> None:
    op.create_index(
        "ix_conversation_customer_email", "conversation", ["customer_email"], unique=False
    )
    op.drop_index("ix_conversation_customer", table_name="conversation")
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.drop_column("unpack_error")
        batch_op.drop_column("unpacked_from")
    with op.batch_alter_table("customernoteedit", schema=None) as batch_op:
        batch_op.drop_index("ix_customernoteedit_customer_created")
    op.drop_table("customernoteedit")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_organisation"))
    op.drop_table("customer")
