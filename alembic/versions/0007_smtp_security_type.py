"""the SMTP security setting gets its own type (it had the IMAP one's)

On PostgreSQL `mailbox.smtp_security` moves from the enum type `imapsecurity` to a new type
`smtpsecurity` with the same values; on SQLite both are the same VARCHAR, nothing changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VALUES = ("ssl", "starttls", "none")


def _retype(new: str) -> None:
    op.execute(
        f"ALTER TABLE mailbox ALTER COLUMN smtp_security TYPE {new} "
        f"USING smtp_security::text::{new}"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    postgresql.ENUM(*_VALUES, name="smtpsecurity").create(op.get_bind())
    _retype("smtpsecurity")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _retype("imapsecurity")
    postgresql.ENUM(name="smtpsecurity").drop(op.get_bind())
