"""web ui: search, mailbox access, admin

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 13:50:00

Per-mailbox access: `agent.all_mailboxes` (existing agents keep seeing every mailbox) and
`agentmailboxaccess`; the sign-in rate limit's `loginattempt`; full-text search (imapdesk/domain/conversations/search.py):
FTS5 tables kept by triggers on SQLite, GIN expression indexes on PostgreSQL.

A later SQLite migration that recreates `message` or `conversation` (batch "move and copy")
drops their triggers with the table: it must create them again (`_sqlite_triggers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# frozen copies of imapdesk/domain/conversations/search.py's documents as of this revision
_PG_MESSAGE_DOCUMENT = (
    # '@', '.', '/' and ':' become spaces, so PostgreSQL's parser splits addresses, hosts,
    # numbers and paths into words as the query does (and as SQLite's FTS5 does)
    "to_tsvector('simple'::regconfig, translate(left("
    "coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || "
    "coalesce(from_email, '') || ' ' || replace(replace("
    "coalesce(\"to\"::text, '') || ' ' || coalesce(cc::text, ''), "
    "'\"name\":', ' '), '\"email\":', ' ') || ' ' || coalesce(text, ''), "
    "100000), '@./:', '    '))"
)
_PG_CONVERSATION_DOCUMENT = (
    "to_tsvector('simple'::regconfig, translate(coalesce(subject, '') || ' ' || "
    "coalesce(customer_name, '') || ' ' || coalesce(customer_email, ''), '@./:', '    '))"
)


def _people(row: str) -> str:
    # names and addresses; the JSON keys of to/cc are left out so "name" finds no one
    def addresses(column: str) -> str:
        return (
            f"replace(replace(coalesce({row}.\"{column}\", ''), '\"name\":', ' '), "
            "'\"email\":', ' ')"
        )

    return (
        f"coalesce({row}.from_name, '') || ' ' || coalesce({row}.from_email, '') || ' ' || "
        f"{addresses('to')} || ' ' || {addresses('cc')}"
    )


def _message_values(row: str) -> str:
    return f"{row}.id, {row}.subject, {_people(row)}, {row}.text"


def _conversation_values(row: str) -> str:
    return (
        f"{row}.id, {row}.subject, "
        f"coalesce({row}.customer_name, '') || ' ' || coalesce({row}.customer_email, '')"
    )


def _sqlite_triggers() -> list[str]:
    m_cols = "rowid, subject, people, body"
    c_cols = "rowid, subject, customer"
    return [
        "CREATE TRIGGER message_fts_ai AFTER INSERT ON message BEGIN "
        f"INSERT INTO message_fts({m_cols}) VALUES ({_message_values('new')}); END",
        "CREATE TRIGGER message_fts_ad AFTER DELETE ON message BEGIN "
        f"INSERT INTO message_fts(message_fts, {m_cols}) "
        f"VALUES ('delete', {_message_values('old')}); END",
        'CREATE TRIGGER message_fts_au AFTER UPDATE OF subject, from_name, from_email, "to", '
        "cc, text ON message BEGIN "
        f"INSERT INTO message_fts(message_fts, {m_cols}) "
        f"VALUES ('delete', {_message_values('old')}); "
        f"INSERT INTO message_fts({m_cols}) VALUES ({_message_values('new')}); END",
        "CREATE TRIGGER conversation_fts_ai AFTER INSERT ON conversation BEGIN "
        f"INSERT INTO conversation_fts({c_cols}) VALUES ({_conversation_values('new')}); END",
        "CREATE TRIGGER conversation_fts_ad AFTER DELETE ON conversation BEGIN "
        f"INSERT INTO conversation_fts(conversation_fts, {c_cols}) "
        f"VALUES ('delete', {_conversation_values('old')}); END",
        "CREATE TRIGGER conversation_fts_au AFTER UPDATE OF subject, customer_name, "
        "customer_email ON conversation BEGIN "
        f"INSERT INTO conversation_fts(conversation_fts, {c_cols}) "
        f"VALUES ('delete', {_conversation_values('old')}); "
        f"INSERT INTO conversation_fts({c_cols}) VALUES ({_conversation_values('new')}); END",
    ]


_SQLITE_TRIGGER_NAMES = (
    "message_fts_ai",
    "message_fts_ad",
    "message_fts_au",
    "conversation_fts_ai",
    "conversation_fts_ad",
    "conversation_fts_au",
)


def upgrade() -> None:
    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("all_mailboxes", sa.Boolean(), nullable=False, server_default=sa.true())
        )

    op.create_table(
        "agentmailboxaccess",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", "mailbox_id"),
    )
    with op.batch_alter_table("agentmailboxaccess", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agentmailboxaccess_mailbox_id"), ["mailbox_id"], unique=False
        )

    op.create_table(
        "loginattempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("client_address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("loginattempt", schema=None) as batch_op:
        batch_op.create_index(
            "ix_loginattempt_address_created", ["client_address", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_loginattempt_email_created", ["email", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_loginattempt_created_at"), ["created_at"], unique=False
        )

    op.create_index(
        "ix_conversation_queue",
        "conversation",
        ["status", "mailbox_id", "assignee_id", "merged_into_id"],
        unique=False,
    )

    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE message_fts USING fts5(subject, people, body, content='')")
        op.execute(
            "CREATE VIRTUAL TABLE conversation_fts USING fts5(subject, customer, content='')"
        )
        for statement in _sqlite_triggers():
            op.execute(statement)
        op.execute(
            "INSERT INTO message_fts(rowid, subject, people, body) "
            f"SELECT {_message_values('message')} FROM message"
        )
        op.execute(
            "INSERT INTO conversation_fts(rowid, subject, customer) "
            f"SELECT {_conversation_values('conversation')} FROM conversation"
        )
    else:
        op.execute(f"CREATE INDEX ix_message_search ON message USING gin ({_PG_MESSAGE_DOCUMENT})")
        op.execute(
            "CREATE INDEX ix_conversation_search ON conversation "
            f"USING gin ({_PG_CONVERSATION_DOCUMENT})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS conversation_fts")
        op.execute("DROP TABLE IF EXISTS message_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_conversation_search")
        op.execute("DROP INDEX IF EXISTS ix_message_search")

    op.drop_index("ix_conversation_queue", table_name="conversation")

    with op.batch_alter_table("loginattempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loginattempt_created_at"))
        batch_op.drop_index("ix_loginattempt_email_created")
        batch_op.drop_index("ix_loginattempt_address_created")
    op.drop_table("loginattempt")

    with op.batch_alter_table("agentmailboxaccess", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agentmailboxaccess_mailbox_id"))
    op.drop_table("agentmailboxaccess")

    with op.batch_alter_table("agent", schema=None) as batch_op:
        batch_op.drop_column("all_mailboxes")
