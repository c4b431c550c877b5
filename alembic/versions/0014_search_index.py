"""per-conversation search index for words of any script (issue 13)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 05:00:00

One search document per conversation (imapdesk/domain/conversations/search_index.py) instead
of one per message: SQLite's FTS5 table `conversation_search` (the `ascii` tokenizer over our
own terms: words, and pairs of characters for unspaced scripts such as Chinese and Japanese),
PostgreSQL's table `conversation_search` with a `tsvector` written term by term and a GIN
index. No PostgreSQL extension is needed: `pg_trgm` (like FTS5's `trigram`) finds nothing
shorter than three characters, and most Chinese words are two.

The per-message indexes of 0004 go (FTS5 tables and their triggers; the GIN expression
indexes). Every existing conversation's document is written here (about a minute for 300,000
messages). Deleting a conversation deletes its document: a foreign key on PostgreSQL, the
trigger `conversation_search_ad` on SQLite; a later SQLite migration that recreates
`conversation` (batch "move and copy") drops the trigger with the table and must create it
again (`SQLITE_TRIGGER`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op
from imapdesk.domain.conversations.search_index import rebuild_all

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE conversation_search USING fts5("
    "subject, sender, recipient, body, tokenize = 'ascii', columnsize = 0)"
)
SQLITE_TRIGGER = (
    "CREATE TRIGGER conversation_search_ad AFTER DELETE ON conversation BEGIN "
    "DELETE FROM conversation_search WHERE rowid = old.id; END"
)
PG_TABLE = (
    "CREATE TABLE conversation_search ("
    "conversation_id integer PRIMARY KEY REFERENCES conversation (id) ON DELETE CASCADE, "
    "terms tsvector NOT NULL)"
)
PG_INDEX = "CREATE INDEX ix_conversation_search_terms ON conversation_search USING gin (terms)"
# no statistics: with them, PostgreSQL reads a common word's matches by scanning the table,
# where each document is a TOASTed value read and decompressed to be checked (2 s for 100,000
# conversations); without them it assumes few matches and asks the GIN index, which answers
# without reading a document
PG_NO_STATISTICS = "ALTER TABLE conversation_search ALTER COLUMN terms SET STATISTICS 0"

_OLD_SQLITE_TRIGGERS = (
    "message_fts_ai",
    "message_fts_ad",
    "message_fts_au",
    "conversation_fts_ai",
    "conversation_fts_ad",
    "conversation_fts_au",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _OLD_SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS message_fts")
        op.execute("DROP TABLE IF EXISTS conversation_fts")
        op.execute(SQLITE_TABLE)
        op.execute(SQLITE_TRIGGER)
    else:
        op.execute("DROP INDEX IF EXISTS ix_message_search")
        op.execute("DROP INDEX IF EXISTS ix_conversation_search")
        op.execute(PG_TABLE)
        op.execute(PG_INDEX)
        op.execute(PG_NO_STATISTICS)
    rebuild_all(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE conversation_search")  # its size, which search plans by


def _revision_0004() -> ModuleType:
    path = Path(__file__).with_name("0004_web_admin_and_search.py")
    spec = importlib.util.spec_from_file_location("imapdesk_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    """Back to 0004's per-message indexes, filled again from the messages."""
    old = _revision_0004()
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS conversation_search_ad")
        op.execute("DROP TABLE IF EXISTS conversation_search")
        op.execute("CREATE VIRTUAL TABLE message_fts USING fts5(subject, people, body, content='')")
        op.execute(
            "CREATE VIRTUAL TABLE conversation_fts USING fts5(subject, customer, content='')"
        )
        for statement in old._sqlite_triggers():
            op.execute(statement)
        op.execute(
            "INSERT INTO message_fts(rowid, subject, people, body) "
            f"SELECT {old._message_values('message')} FROM message"
        )
        op.execute(
            "INSERT INTO conversation_fts(rowid, subject, customer) "
            f"SELECT {old._conversation_values('conversation')} FROM conversation"
        )
    else:
        op.execute("DROP TABLE IF EXISTS conversation_search")
        op.execute(
            f"CREATE INDEX ix_message_search ON message USING gin ({old._PG_MESSAGE_DOCUMENT})"
        )
        op.execute(
            "CREATE INDEX ix_conversation_search ON conversation "
            f"USING gin ({old._PG_CONVERSATION_DOCUMENT})"
        )
