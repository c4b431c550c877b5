"""Drafts: what an agent is writing in a conversation, kept on the server so that nothing typed
is lost to a reload, a closed tab or a crash, and so that it follows the agent to another
device.

One draft per agent and conversation (the composer writes one thing at a time), holding its
kind (reply, reply all, forward, internal note), the text and the recipients as typed. The web
composer saves it as the agent types (debounced) and when it loses focus; the REST API reads,
writes and deletes it (`/api/v1/conversations/{id}/draft`, the caller's own). A save is one
upsert of one row: it does not touch the conversation (its version and `updated_at` stay, so
that typing wakes no live page and no cache).

A draft ends when what it held is sent (a reply, a forward or a note: `forget`, called by the
reply service), when the agent discards it, or when it is saved empty. A reply taken back
during its undo window becomes the draft again (`keep`). Colleagues see who has a draft on a
conversation (`holders`, with the presence), never its text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from imapdesk.domain.conversations import reads
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Agent, Conversation, ConversationStatus, Draft, as_utc, utcnow

KINDS = ("reply", "reply_all", "forward", "note")
# as much as the composer sends (api/web/compose.py)
BODY_MAX = 1_000_000
RECIPIENTS_MAX = 100
RECIPIENT_MAX = 1000


@dataclass(frozen=True)
class DraftView:
    """A draft as its agent gets it back."""

    conversation_id: int
    kind: str
    body: str
    to: list[str]
    cc: list[str]
    updated_at: datetime
    # what the rich-text composer held (the text is in `body` too); None: plain text
    html: str | None = None


@dataclass(frozen=True)
class DraftHolder:
    """A colleague who has a draft on a conversation (not what it says)."""

    agent_id: int
    name: str
    email: str


def _view(draft: Draft) -> DraftView:
    return DraftView(
        conversation_id=draft.conversation_id,
        kind=draft.kind,
        body=draft.body,
        to=list(draft.to or []),
        cc=list(draft.cc or []),
        updated_at=as_utc(draft.updated_at),
        html=draft.html,
    )


def _text(value: str) -> str:
    """As typed, with line ends as a text area has them (a form sends CRLF); without NUL,
    which PostgreSQL refuses in text and nothing can show."""
    return value.replace("\r\n", "\n").replace("\x00", "")


def _recipients(values: Sequence[str] | None, field: str) -> list[str]:
    entries = [_text(str(v)).strip() for v in values or []]
    entries = [e for e in entries if e]
    if len(entries) > RECIPIENTS_MAX:
        raise InvalidInput(f"a draft holds at most {RECIPIENTS_MAX} recipients", field=field)
    if any(len(e) > RECIPIENT_MAX for e in entries):
        raise InvalidInput(f"a recipient is at most {RECIPIENT_MAX} characters", field=field)
    return entries


def _checked(
    kind: str, body: str, to: Sequence[str] | None, cc: Sequence[str] | None
) -> tuple[str, str, list[str], list[str]]:
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if len(body) > BODY_MAX:
        raise InvalidInput(f"a draft is at most {BODY_MAX:,} characters", field="body")
    if kind == "note":
        to, cc = [], []
    return kind, _text(body), _recipients(to, "to"), _recipients(cc, "cc")


def _visible_id(session: Session, agent: Agent, conversation_id: int) -> int:
    """The conversation the agent may see (NotFound otherwise), following merges."""
    return reads.visible_conversation_id(session, agent, conversation_id)


def get(session: Session, agent: Agent, conversation_id: int) -> DraftView | None:
    """The agent's draft on the conversation, if any (NotFound for a conversation the agent
    may not see)."""
    assert agent.id is not None
    return own(session, agent.id, _visible_id(session, agent, conversation_id))


def own(session: Session, agent_id: int, cid: int) -> DraftView | None:
    """The agent's draft on a conversation the caller has authorised. A draft written on a
    conversation that was merged into this one since is found here too (the newest, when
    there are several)."""
    draft = session.get(Draft, (cid, agent_id))
    if draft is None:
        draft = session.exec(
            select(Draft)
            .join(Conversation, col(Conversation.id) == col(Draft.conversation_id))
            .where(col(Draft.agent_id) == agent_id, col(Conversation.merged_into_id) == cid)
            .order_by(col(Draft.updated_at).desc())
            .limit(1)
        ).first()
    return _view(draft) if draft is not None else None


def _upsert(
    session: Session,
    conversation_id: int,
    agent_id: int,
    kind: str,
    body: str,
    to: list[str],
    cc: list[str],
    html: str | None = None,
) -> datetime:
    """One statement: the row written, or rewritten (its `created_at` kept)."""
    now = utcnow()
    values = {
        "conversation_id": conversation_id,
        "agent_id": agent_id,
        "kind": kind,
        "body": body,
        "to": to,
        "cc": cc,
        "html": html,
        "created_at": now,
        "updated_at": now,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Draft).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["conversation_id", "agent_id"],
        set_={
            "kind": stmt.excluded.kind,
            "body": stmt.excluded.body,
            "to": stmt.excluded["to"],
            "cc": stmt.excluded.cc,
            "html": stmt.excluded.html,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    session.execute(stmt)
    return now


def save(
    session: Session,
    agent: Agent,
    conversation_id: int,
    *,
    kind: str,
    body: str,
    to: Sequence[str] | None = None,
    cc: Sequence[str] | None = None,
    html: str | None = None,
) -> DraftView | None:
    """The agent's draft becomes this (InvalidInput for an unknown kind or what is too long).
    A draft with no text and no recipients is no draft: it is deleted, and None returned.
    `html` is what the rich-text composer holds, kept as written (sanitised when sent; the
    page shows it only inside the editor, which sanitises what it loads)."""
    assert agent.id is not None
    kind, body, to_list, cc_list = _checked(kind, body, to, cc)
    if html is not None:
        if len(html) > BODY_MAX:
            raise InvalidInput(f"a draft is at most {BODY_MAX:,} characters", field="body")
        html = _text(html) or None
    cid = _visible_id(session, agent, conversation_id)
    if not body.strip() and not to_list and not cc_list and "<img" not in (html or ""):
        forget(session, agent.id, cid)
        return None
    at = _upsert(session, cid, agent.id, kind, body, to_list, cc_list, html)
    return DraftView(cid, kind, body, to_list, cc_list, at, html)


def discard(session: Session, agent: Agent, conversation_id: int) -> bool:
    """The agent's draft on the conversation is gone (and those it wrote on conversations
    merged into it); whether there was one."""
    assert agent.id is not None
    cid = _visible_id(session, agent, conversation_id)
    merged = select(Conversation.id).where(col(Conversation.merged_into_id) == cid)
    result = session.execute(
        delete(Draft).where(
            col(Draft.agent_id) == agent.id,
            (col(Draft.conversation_id) == cid) | col(Draft.conversation_id).in_(merged),
        )
    )
    return bool(getattr(result, "rowcount", 0))


def forget(session: Session, agent_id: int, conversation_id: int) -> None:
    """What the draft held went out (or was emptied): the draft ends. No authorisation: the
    caller has done it (the reply service)."""
    session.execute(
        delete(Draft).where(
            col(Draft.agent_id) == agent_id, col(Draft.conversation_id) == conversation_id
        )
    )


def keep(
    session: Session,
    agent: Agent,
    conversation_id: int,
    *,
    kind: str,
    body: str,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    html: str | None = None,
) -> None:
    """A reply taken back (Undo): what it said is the agent's draft again, so that it survives
    a reload like anything typed (`html`: what the rich-text composer held). The caller has
    authorised it; "new" (a first message) is kept as a forward, the composer's kind with
    recipients of its own."""
    assert agent.id is not None
    kind = kind if kind in KINDS else "forward"
    kind, text, to_list, cc_list = _checked(kind, body[:BODY_MAX], to, cc)
    html = _text(html[:BODY_MAX]) or None if html else None
    if text.strip() or to_list or cc_list or html:
        _upsert(session, conversation_id, agent.id, kind, text, to_list, cc_list, html)


# --- what colleagues and lists see ------------------------------------------------------------


def holders(session: Session, conversation_ids: Iterable[int]) -> dict[int, list[DraftHolder]]:
    """Who has a draft on each of these conversations, by name (one indexed query)."""
    ids = list(conversation_ids)
    if not ids:
        return {}
    rows = session.execute(
        sa_select(col(Draft.conversation_id), col(Agent.id), col(Agent.name), col(Agent.email))
        .join(Agent, col(Agent.id) == col(Draft.agent_id))
        .where(col(Draft.conversation_id).in_(ids))
        .order_by(col(Draft.conversation_id), col(Agent.name), col(Agent.id))
    )
    out: dict[int, list[DraftHolder]] = defaultdict(list)
    for cid, aid, name, email in rows:
        out[cid].append(DraftHolder(aid, name, email))
    return dict(out)


def count(session: Session, agent_id: int, mailbox_ids: Sequence[int]) -> int:
    """How many conversations of these mailboxes the agent has a draft on (the Drafts queue:
    every status but deleted, merged ones left out)."""
    if not mailbox_ids:
        return 0
    return int(
        session.execute(
            sa_select(func.count())
            .select_from(Draft)
            .join(Conversation, col(Conversation.id) == col(Draft.conversation_id))
            .where(
                col(Draft.agent_id) == agent_id,
                col(Conversation.mailbox_id).in_(list(mailbox_ids)),
                col(Conversation.merged_into_id).is_(None),
                col(Conversation.status) != ConversationStatus.deleted,
            )
        ).scalar_one()
    )


def stamp(session: Session, agent_id: int) -> tuple[object, ...]:
    """Changes whenever the agent's drafts come or go (not as they are typed): how many, and
    the newest's start. What a cache of the agent's lists adds to the conversations' stamp."""
    row = session.execute(
        sa_select(func.count(), func.max(Draft.created_at)).where(col(Draft.agent_id) == agent_id)
    ).one()
    return tuple(row)
