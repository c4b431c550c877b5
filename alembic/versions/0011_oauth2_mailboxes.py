"""OAuth2 credentials for mailboxes (issue 12)

`mailboxoauth2` holds, for a mailbox that logs in with OAuth2 (SASL XOAUTH2 or OAUTHBEARER),
its provider's endpoints, the client and the tokens (encrypted). Such a mailbox keeps an
encrypted empty password in `mailbox.password_encrypted`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "mailboxoauth2",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column(
            "provider",
            sa.Enum(
                "microsoft",
                "google",
                "generic",
                name="oauth2provider",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("issuer", _text(1000), nullable=True),
        sa.Column("authorization_endpoint", _text(1000), nullable=True),
        sa.Column("token_endpoint", _text(1000), nullable=False),
        sa.Column("device_authorization_endpoint", _text(1000), nullable=True),
        sa.Column("client_id", _text(500), nullable=False),
        sa.Column("client_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=True),
        sa.Column(
            "grant",
            sa.Enum(
                "refresh_token",
                "client_credentials",
                name="oauth2grant",
                native_enum=False,
                length=30,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "connected",
                "failed",
                name="oauth2state",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_token_expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("refreshing_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("refreshed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("authorization_state_hash", _text(64), nullable=True),
        sa.Column("code_verifier_encrypted", sa.Text(), nullable=True),
        sa.Column("authorization_redirect_uri", _text(1000), nullable=True),
        sa.Column(
            "authorization_started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True
        ),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mailbox_id"),
        sa.UniqueConstraint("authorization_state_hash"),
    )


def downgrade() -> None:
    op.drop_table("mailboxoauth2")
