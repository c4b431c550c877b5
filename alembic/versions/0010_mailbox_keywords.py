"""keywords a mailbox's server refuses or cannot keep (issue 12)

`unkeptkeyword` holds one row per folder and keyword the server refused (a NO to STORE), takes
no more of (PERMANENTFLAGS without `\\*`), keeps no more of (its known limit of distinct
keywords per folder) or did not keep (read back without it). What the write-back recorded
before, in `mailbox.capabilities["keywords_dropped"]`, moves into it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# what the old records' free-text reasons become
_LIMIT_WORDS = ("keeps", "limit")
_FULL_WORDS = ("no new keywords",)
_NOT_KEPT_WORDS = ("not kept",)


def _reason(text: str) -> str:
    words = text.lower()
    if any(w in words for w in _FULL_WORDS):
        return "folder_full"
    if any(w in words for w in _NOT_KEPT_WORDS):
        return "not_kept"
    if "imap keyword" in words:
        return "invalid"
    if any(w in words for w in _LIMIT_WORDS):
        return "limit"
    return "refused"


def _capabilities(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {}


def upgrade() -> None:
    op.create_table(
        "unkeptkeyword",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("folder", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("keyword", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column(
            "reason",
            sa.Enum(
                "refused",
                "folder_full",
                "limit",
                "not_kept",
                "invalid",
                name="keywordrefusal",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "folder", "keyword"),
    )
    _move_old_records()


def _move_old_records() -> None:
    """`capabilities["keywords_dropped"]` entries become rows; the key goes."""
    bind = op.get_bind()
    mailbox = sa.table("mailbox", sa.column("id", sa.Integer), sa.column("capabilities", sa.JSON))
    unkept = sa.table(
        "unkeptkeyword",
        sa.column("mailbox_id", sa.Integer),
        sa.column("folder", sa.String),
        sa.column("keyword", sa.String),
        sa.column("reason", sa.String),
        sa.column("detail", sa.Text),
        sa.column("created_at", sqlmodel.sql.sqltypes.UTCDateTime()),
    )
    now = datetime.now(UTC)
    for mailbox_id, raw in bind.execute(sa.select(mailbox.c.id, mailbox.c.capabilities)).all():
        caps = _capabilities(raw)
        if "keywords_dropped" not in caps:
            continue
        seen: set[tuple[str, str]] = set()
        rows = []
        for entry in caps.pop("keywords_dropped") or []:
            if not isinstance(entry, dict):
                continue
            folder, keyword = str(entry.get("folder") or ""), str(entry.get("keyword") or "")
            key = (folder, keyword.lower())
            if not folder or not keyword or key in seen:
                continue
            seen.add(key)
            detail = str(entry.get("reason") or "")
            rows.append(
                {
                    "mailbox_id": mailbox_id,
                    "folder": folder[:500],
                    "keyword": keyword[:255],
                    "reason": _reason(detail),
                    "detail": detail,
                    "created_at": now,
                }
            )
        if rows:
            bind.execute(unkept.insert(), rows)
        bind.execute(mailbox.update().where(mailbox.c.id == mailbox_id).values(capabilities=caps))


def downgrade() -> None:
    op.drop_table("unkeptkeyword")
