"""Configuration from IMAPDESK_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "imapdesk-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAPDESK_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("./data")
    database_url: str = ""
    secret_key: str = DEVELOPMENT_SECRET
    host: str = "127.0.0.1"
    port: int = 8000

    # worker
    fetch_batch_size: int = 500
    # and at most this many bytes per batch: bounds the worker's memory
    fetch_batch_bytes: int = 4 * 1024 * 1024
    # processes that parse mail during the initial sync; default: one less than the cores
    parse_processes: int | None = None
    idle_reissue_seconds: int = 29 * 60
    # how often an idling folder is checked with STATUS (deleted and recreated, missed news)
    folder_check_seconds: float = 60.0
    # an idling folder ends its IDLE this often: a change made in the instant between the NOOP
    # before an IDLE and the server's watch starting is told only with the next DONE
    idle_refresh_seconds: float = 5.0
    # without CONDSTORE, flags of a folder are read again (and diffed) at most this often
    flag_rescan_seconds: float = 30.0
    # a message gone from a folder is judged (moved? deleted?) after this long
    vanish_grace_seconds: float = 1.5
    max_message_bytes: int = 50 * 1024 * 1024
    large_message_bytes: int = 2 * 1024 * 1024
    reconnect_initial_seconds: float = 1.0
    reconnect_max_seconds: float = 300.0
    # how often the worker looks for added, changed or removed mailboxes
    mailbox_refresh_seconds: float = 5.0
    # write-back (worker/writeback/): how often the outbox is polled (a commit in the same process
    # wakes it at once, imapdesk/kernel/wakeups.py), and how often a failing action is retried
    writeback_poll_seconds: float = 0.05
    writeback_max_attempts: int = 8
    writeback_retry_initial_seconds: float = 5.0
    writeback_retry_max_seconds: float = 900.0
    # threading
    subject_fallback_days: int = 14
    # sending (worker/sender.py): how often the outgoing queue is polled (an API in the same
    # process wakes it at once), how a temporary SMTP failure is retried, and when it gives up
    sender_poll_seconds: float = 0.5
    smtp_timeout_seconds: float = 30.0
    smtp_retry_initial_seconds: float = 30.0
    smtp_retry_max_seconds: float = 1800.0
    smtp_max_attempts: int = 12
    # largest total size of a reply's attachments
    max_outbound_attachment_bytes: int = 25 * 1024 * 1024

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEVELOPMENT_SECRET:
            raise ValueError(
                "IMAPDESK_SECRET_KEY must be set to a long random value in production "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'imapdesk.db').resolve()}"
        return self

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"


@lru_cache
def get_settings() -> Settings:
    return Settings()
