"""What changed, read from the database: the source of the web UI's live updates.

The worker and the API are separate processes that share only the database, so changes are
found there: every change to a conversation (new mail, a note, a status, a claim, a merge, ...)
bumps `Conversation.version` and `updated_at`, which is indexed. A `ChangeFeed` polls the rows
changed lately and reports each (id, version) it has not reported yet, and diffs the presence
table (imapdesk/domain/live/presence.py), with who has a draft where someone is looking
(imapdesk/domain/outbound/drafts.py: saving a draft changes no conversation). One feed per
API process serves every open page (api/web/live.py).

`updated_at` is set before the writer commits, so a row can become visible a moment after a
poll has passed its timestamp; each poll looks `LOOKBACK` back and drops what it has reported
already, which makes a late commit (up to LOOKBACK late) show up on the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from imapdesk.domain.live.presence import present
from imapdesk.domain.outbound import drafts
from imapdesk.kernel.models import Conversation, utcnow

LOOKBACK = timedelta(seconds=10)


@dataclass(frozen=True)
class Change:
    """`kind` "conversation": it changed (now at `version`); "presence": who is on it now, and
    who has a draft on it (`drafts`)."""

    kind: str
    conversation_id: int
    mailbox_id: int
    version: int = 0
    agents: tuple[dict[str, Any], ...] = ()
    drafts: tuple[dict[str, Any], ...] = ()

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.conversation_id, "mailbox_id": self.mailbox_id}
        if self.kind == "conversation":
            out["version"] = self.version
        else:
            out["agents"] = list(self.agents)
            out["drafts"] = list(self.drafts)
        return out


@dataclass
class ChangeFeed:
    """Call `poll` every few hundred milliseconds; the first call only takes stock."""

    lookback: timedelta = LOOKBACK
    _versions: dict[int, tuple[int, datetime]] = field(default_factory=dict)
    _presence: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    _mailboxes: dict[int, int] = field(default_factory=dict)
    _primed: bool = False

    def poll(self, session: Session, *, now: datetime | None = None) -> list[Change]:
        moment = now or utcnow()
        since = moment - self.lookback
        changes: list[Change] = []
        rows = session.exec(
            select(
                Conversation.id, Conversation.mailbox_id, Conversation.version,
                Conversation.updated_at,
            ).where(col(Conversation.updated_at) > since)
        )  # fmt: skip
        for cid, mailbox_id, version, updated_at in rows:
            assert cid is not None
            self._mailboxes[cid] = mailbox_id
            seen = self._versions.get(cid)
            if seen is None or seen[0] != version:
                self._versions[cid] = (version, updated_at)
                if self._primed:
                    changes.append(Change("conversation", cid, mailbox_id, version))
        for cid in [c for c, (_, at) in self._versions.items() if at <= since]:
            del self._versions[cid]

        details = present(session, now=moment)
        # who has a draft, where someone is looking (a draft is news only to those there)
        drafting = drafts.holders(session, details)
        now_present = {
            cid: tuple((p.agent_id, p.state.value) for p in views)
            + tuple((h.agent_id, "draft") for h in drafting.get(cid, ()))
            for cid, views in details.items()
        }
        missing = [cid for cid in now_present if cid not in self._mailboxes]
        if missing:
            for cid, mailbox_id in session.exec(
                select(Conversation.id, Conversation.mailbox_id).where(
                    col(Conversation.id).in_(missing)
                )
            ):
                assert cid is not None
                self._mailboxes[cid] = mailbox_id
        for cid in set(now_present) | set(self._presence):
            if now_present.get(cid, ()) == self._presence.get(cid, ()):
                continue
            if self._primed:
                agents = tuple(
                    {"id": p.agent_id, "name": p.name, "email": p.email, "state": p.state.value}
                    for p in details.get(cid, [])
                )
                holders = tuple(
                    {"id": h.agent_id, "name": h.name, "email": h.email}
                    for h in drafting.get(cid, [])
                )
                changes.append(
                    Change("presence", cid, self._mailboxes.get(cid, 0), 0, agents, holders)
                )
        self._presence = now_present
        if len(self._mailboxes) > 4 * (len(self._versions) + len(now_present)) + 1000:
            keep = set(self._versions) | set(now_present)
            self._mailboxes = {c: m for c, m in self._mailboxes.items() if c in keep}
        self._primed = True
        return changes
