"""The agent's own account (`/account`): their name, signature, timezone, undo window and
password. The rules: a new password needs the current one and at least
`MIN_PASSWORD_LENGTH` characters, and signs out every other browser of the agent (the caller
signs the current one in again); the timezone is an IANA name (None: UTC); the undo window is
0 to `MAX_UNDO_SECONDS` seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlmodel import Session

from imapdesk.domain.accounts import administration
from imapdesk.domain.accounts.agents import HashedPassword, password_matches
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Agent

MAX_UNDO_SECONDS = 60
MAX_SIGNATURE = 5000


@cache
def timezone_names() -> tuple[str, ...]:
    """The IANA names the picker offers (sorted; the odd legacy aliases left out)."""
    names = available_timezones()
    return (*sorted(n for n in names if "/" in n and not n.startswith(("Etc/", "SystemV/"))), "UTC")


@cache
def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_of(agent: Agent | None) -> tzinfo:
    """The zone the agent's times are shown in: theirs, else UTC."""
    name = agent.timezone if agent is not None else None
    return (_zone(name) if name else None) or UTC


def zone_named(name: str | None) -> tzinfo:
    return (_zone(name) if name else None) or UTC


def check_timezone(name: str) -> str | None:
    """A valid IANA name, stripped (blank: None, i.e. UTC); else InvalidInput."""
    name = name.strip()
    if not name:
        return None
    if len(name) > 64 or ("/" not in name and name != "UTC") or _zone(name) is None:
        raise InvalidInput(f"{name!r} is not a timezone (e.g. Europe/Paris)", field="timezone")
    return name


def local_to_utc(value: str, agent: Agent | None) -> datetime:
    """A `datetime-local` value ("2026-12-24T09:30") read in the agent's zone, as UTC."""
    try:
        naive = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput("pick a date and a time", field="until") from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    return naive.replace(tzinfo=zone_of(agent)).astimezone(UTC)


def utc_to_local_input(value: datetime, agent: Agent | None) -> str:
    """The `datetime-local` value of a UTC time in the agent's zone."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(zone_of(agent)).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class ProfileChange:
    name: str
    signature: str
    timezone: str
    undo_send_seconds: str
    # the composer opens as a plain text area rather than the rich-text editor
    composer_plain_text: bool = False


def update_profile(session: Session, agent: Agent, change: ProfileChange) -> None:
    """Name (a blank one keeps it), signature (blank: none), timezone, undo window and how the
    composer opens."""
    name = change.name.strip()
    if len(name) > 200:
        raise InvalidInput("the name is longer than 200 characters", field="name")
    signature = change.signature.replace("\r\n", "\n").strip("\n")
    if len(signature) > MAX_SIGNATURE:
        raise InvalidInput(
            f"the signature is longer than {MAX_SIGNATURE} characters", field="signature"
        )
    timezone = check_timezone(change.timezone)
    undo = change.undo_send_seconds.strip()
    if not undo.isdigit() or int(undo) > MAX_UNDO_SECONDS:
        raise InvalidInput(
            f"the undo window is 0 to {MAX_UNDO_SECONDS} seconds", field="undo_send_seconds"
        )
    agent.name = name or agent.name
    agent.signature = signature if signature.strip() else None
    agent.timezone = timezone
    agent.undo_send_seconds = int(undo)
    agent.composer_plain_text = change.composer_plain_text
    session.add(agent)


def check_password_change(agent: Agent, current: str, new: str, repeated: str) -> HashedPassword:
    """The new password hashed, once the current one matched (slow, argon2 twice: before the
    write). InvalidInput when the current one is wrong or the new one is not acceptable."""
    if password_matches(agent, current) is None:
        raise InvalidInput("the current password is not right", field="current_password")
    if new != repeated:
        raise InvalidInput("the two new passwords differ", field="new_password")
    return administration.new_password(new, "new password")


def change_password(session: Session, agent: Agent, hashed: HashedPassword) -> None:
    """The new password; every browser session of the agent ends (the caller starts a new one
    for the browser that changed it)."""
    administration.set_password(session, agent, hashed)
