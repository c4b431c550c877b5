"""Configuration from IMAPDESK_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "imapdesk-development-secret-change-me"
# production's least secret key (IMAPDESK_SECRET_KEY), in bytes: 256 bits
MIN_SECRET_KEY_BYTES = 32


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
    # before an IDLE and the server's watch starting is told only with the next DONE (with a
    # connection per folder, whose IDLE waits on the socket and misses what the server told
    # with IDLE's continuation; not so on shared connections: worker/mailbox_sync.py)
    idle_refresh_seconds: float = 5.0
    # IMAP connections per mailbox (worker/connections.py): at most this many, shared by the
    # parts of the worker (2 where the server has NOTIFY); fewer when the server refuses more,
    # tried again after `connection_retry_seconds`. `per_folder`: one connection per followed
    # folder plus the write-back's and the sender's (the earlier design, kept for comparison)
    imap_max_connections: int = Field(default=3, ge=1)
    imap_connection_mode: Literal["shared", "per_folder"] = "shared"
    connection_retry_seconds: float = Field(default=120.0, gt=0)
    # how new mail is heard: `auto` takes NOTIFY where the server has it, else IDLE, and polls
    # INBOX with NOOP every `push_poll_seconds` where there is neither or where the probe found
    # the IDLE lazy (telling of an APPEND later than `push_lazy_seconds`)
    imap_push: Literal["auto", "notify", "idle", "poll"] = "auto"
    push_poll_seconds: float = Field(default=0.5, gt=0)
    push_lazy_seconds: float = Field(default=2.5, gt=0)
    # folders no NOTIFY tells of are checked with STATUS this often (a message leaving a
    # folder has them all checked at once)
    folder_poll_seconds: float = Field(default=5.0, gt=0)
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
    # largest image pasted or dropped into the composer (sent as an inline part)
    max_compose_image_bytes: int = 5 * 1024 * 1024
    # a pasted image that no draft and no unsent reply shows is removed (row and file) by the
    # worker's housekeeping once it is this old (imapdesk/domain/outbound/images.py)
    compose_image_max_age_hours: float = Field(default=24.0, gt=0)

    # OAuth2 mailboxes: the address of imapdesk's callback (`/admin/oauth2/callback`) as the
    # provider knows it; default: built from the request (behind a proxy that does not pass
    # the public host and scheme, set it to the URI registered with the provider)
    oauth2_redirect_uri: str | None = None

    # request limits (api/limits.py), held before anything is parsed: the request line and
    # headers together, the time to send them, and an idle keep-alive connection's life; a
    # body by its kind (JSON; forms; an upload is its attachments, above, counted as they
    # arrive, plus a JSON body's worth of text), the files in one request, the fields in one
    # form, how deep JSON may nest; how long a body may stop arriving
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    header_timeout_seconds: float = Field(default=15.0, gt=0)
    keep_alive_seconds: float = Field(default=5.0, gt=0)
    max_json_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_form_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_upload_files: int = Field(default=20, ge=1)
    max_form_fields: int = Field(default=1000, ge=1)
    max_json_depth: int = Field(default=32, ge=1)
    body_timeout_seconds: float = Field(default=30.0, gt=0)

    # browser sessions (imapdesk/domain/accounts/sessions.py): a session unused this long ends,
    # and every session ends this long after sign-in, used or not
    session_idle_seconds: int = 3 * 24 * 3600
    session_lifetime_seconds: int = 14 * 24 * 3600

    # capacity of `serve` (api/capacity.py): database connections per process (`db_pool_size`
    # kept open, up to `db_max_overflow` more under load); a request waits at most
    # `db_wait_seconds` for one, then answers 503 with Retry-After; threads that run request
    # handlers; open /live streams per process and per agent (more answer 503, Retry-After)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_wait_seconds: float = Field(default=3.0, gt=0)
    web_threads: int = Field(default=40, ge=4)
    live_streams_max: int = Field(default=1000, ge=1)
    live_streams_per_agent: int = Field(default=20, ge=1)
    # automation rules (imapdesk/domain/rules/): how often the worker looks for events and
    # time-based rules, and at most one automatic reply per customer and mailbox in this window
    rules_poll_seconds: float = Field(default=1.0, gt=0)
    rules_auto_reply_window_hours: float = Field(default=24.0, ge=0)
    # outgoing webhooks (worker/webhooks.py): how often the event log and the due deliveries
    # are looked at, a receiver's time to answer, the retries' back-off and for how long a
    # delivery is retried; a subscription failing `webhook_disable_after_failures` attempts in a
    # row for at least `webhook_disable_after_seconds` is disabled. Targets on private, loopback
    # or link-local addresses are refused unless `webhook_allow_private`
    # (IMAPDESK_WEBHOOK_ALLOW_PRIVATE=true: integrations on the same host or network)
    webhook_poll_seconds: float = Field(default=0.2, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_initial_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=24 * 3600.0, gt=0)
    webhook_disable_after_failures: int = Field(default=20, ge=1)
    webhook_disable_after_seconds: float = Field(default=24 * 3600.0, ge=0)
    webhook_allow_private: bool = False
    # notifications (worker/notifications.py): how often the event log is looked at
    notifications_poll_seconds: float = Field(default=0.5, gt=0)
    # SLAs (worker/sla_clock.py): how often due times are brought in step with the event log
    # and warnings and breaches fired; the Due soon queue holds what is due within this window
    sla_poll_seconds: float = Field(default=1.0, gt=0)
    sla_due_soon_minutes: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEVELOPMENT_SECRET:
            raise ValueError(
                "IMAPDESK_SECRET_KEY must be set to a long random value in production "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        # the key signs sessions and derives the key that encrypts mailbox passwords: a short
        # one can be guessed offline from any session cookie
        secret_bytes = len(self.secret_key.encode())
        if self.environment == "production" and secret_bytes < MIN_SECRET_KEY_BYTES:
            raise ValueError(
                f"IMAPDESK_SECRET_KEY has {secret_bytes} bytes; production needs at least "
                f"{MIN_SECRET_KEY_BYTES} random ones. Make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
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
