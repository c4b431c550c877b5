"""What agents, integrations and the mailbox do to a conversation: claim, release, assign, set
its status (which ends a snooze), end a snooze, tag it, mark it read. One code path for the web
UI, the REST API and the worker.

Every operation validates, writes the new state, records an `Activity` (where the change came
from and who made it), bumps `version` and `updated_at`, and, unless the change was read back
from the mailbox (source `imap`: it is there already), writes the `PendingImapAction` rows that
carry it to the mailbox, in the caller's transaction (a transactional outbox). A change that
changes nothing records nothing. Nothing here commits.

An operation given a conversation that was merged into another acts on the one it was merged
into (the REST API answers 308 for merged ids before it gets here).

With source `imap` each operation changes exactly what the mailbox changed, never raises
`Conflict` (the change has happened; the last change to reach the server wins) and takes
`agent=None` with `actor` naming who ("a mail client"):
- `claim(..., None)` is a `\\Flagged` seen: claimed, by nobody in particular;
- `assign(..., "handle")` is a `$Assigned_<handle>` seen; a handle no agent has leaves the
  conversation claimed with no assignee and the handle in the activity's details;
- `assign(..., None)` is that keyword gone: the assignee is cleared, the claim (the flag) stays;
- `release(...)` is the flag gone: neither claimed nor assigned;
- `set_tags(...)` gets the tags the keywords say; tags that cannot be keywords, or whose
  keyword the mailbox refused or cannot keep, stay.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

import imapdesk.domain.events  # noqa: F401  (every Activity row gets its event)
from imapdesk.domain.accounts import access
from imapdesk.domain.conversations.aggregates import conversation_by_id, resolve_merged
from imapdesk.domain.mailboxes.keywords import unkept_keyword_names
from imapdesk.domain.mailstate import (
    TAG_MAX,
    FlagChange,
    assignee_keyword,
    claim_flags,
    is_assignee_keyword,
    keywords_kept,
    normalize_handle,
    release_flags,
    role_for_status,
    seen_flags,
    tag_flags,
    tag_to_keyword,
)
from imapdesk.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from imapdesk.kernel.models import (
    Activity,
    ActivitySource,
    Agent,
    Conversation,
    ConversationStatus,
    ConversationTag,
    Direction,
    Mailbox,
    Message,
    MessageLocation,
    PendingImapAction,
    utcnow,
)

MAIL_CLIENT = "a mail client"
# who holds a conversation that a mail client flagged without naming an assignee
MAIL_CLIENT_HOLDER = "someone via mail client"
SYSTEM_ACTOR = "imapdesk"
_ASSIGNMENT_ACTIONS = ("claimed", "released", "assigned", "unassigned")

ConversationRef = Conversation | int


# --- loading ----------------------------------------------------------------------------------


def _ref_id(conversation: ConversationRef) -> int:
    cid = conversation if isinstance(conversation, int) else conversation.id
    if cid is None:
        raise ValueError("the conversation has no id yet: flush it first")
    return cid


def _load(
    session: Session,
    conversation: ConversationRef,
    *,
    lock: bool,
    agent: Agent | None = None,
    source: ActivitySource | None = None,
) -> Conversation:
    """The conversation as the database has it now (following merges), row-locked if `lock`.
    NotFound when an agent acting from the web UI or the API may not see its mailbox.

    The lock (FOR UPDATE on PostgreSQL) makes read-then-write safe against a concurrent
    change; SQLite serialises writers on its own.
    """
    session.flush()
    cid = _ref_id(conversation)
    found = resolve_merged(
        session, conversation_by_id(session, cid, fresh=True, lock=lock), fresh=True, lock=lock
    )
    if found is None:
        raise NotFound(f"no conversation {cid}", conversation_id=cid)
    if found.merged_into_id is not None:
        raise NotFound(f"conversation {cid} was merged too many times")
    if agent is not None and source in (ActivitySource.web, ActivitySource.api):
        access.ensure_can_see(session, agent, found)
    return found


def _email(session: Session, agent_id: int | None) -> str | None:
    if agent_id is None:
        return None
    agent = session.get(Agent, agent_id)
    return agent.email if agent is not None else None


def _handle(session: Session, agent_id: int | None) -> str | None:
    if agent_id is None:
        return None
    agent = session.get(Agent, agent_id)
    return agent.handle if agent is not None else None


def _holder(session: Session, conversation: Conversation) -> str | None:
    """Who holds it: the assignee's email, `MAIL_CLIENT_HOLDER`, or None when nobody does."""
    if conversation.assignee_id is not None:
        return _email(session, conversation.assignee_id) or f"agent {conversation.assignee_id}"
    return MAIL_CLIENT_HOLDER if conversation.claimed else None


def _keywords(session: Session, conversation: Conversation) -> bool:
    mailbox = session.get(Mailbox, conversation.mailbox_id)
    return mailbox is not None and keywords_kept(mailbox.capabilities)


def _assignee_keywords_on(session: Session, conversation: Conversation) -> set[str]:
    """`$Assigned_` keywords on the locations of the conversation's messages."""
    rows = session.exec(
        select(MessageLocation.flags)
        .join(Message, col(Message.id) == col(MessageLocation.message_id))
        .where(col(Message.conversation_id) == conversation.id)
    )
    return {flag for flags in rows for flag in (flags or []) if is_assignee_keyword(flag)}


def _known_assignee_keywords(session: Session, conversation: Conversation) -> set[str]:
    """Those on the messages, plus the current assignee's (its write-back may be pending)."""
    known = _assignee_keywords_on(session, conversation)
    handle = _handle(session, conversation.assignee_id)
    if handle:
        known.add(assignee_keyword(handle))
    return known


def unknown_assignee_handle(session: Session, conversation: Conversation) -> str | None:
    """The handle a mail client assigned that no agent has, while it still holds.

    Kept in the activity log for want of a column (`conversation.assignee_handle` would do).
    """
    if conversation.assignee_id is not None or not conversation.claimed:
        return None
    last = session.exec(
        select(Activity)
        .where(
            col(Activity.conversation_id) == conversation.id,
            col(Activity.action).in_(_ASSIGNMENT_ACTIONS),
        )
        .order_by(col(Activity.created_at).desc(), col(Activity.id).desc())
        .limit(1)
    ).first()
    if last is None or last.action != "assigned" or last.details.get("to") is not None:
        return None
    handle = last.details.get("handle")
    return handle if isinstance(handle, str) else None


# --- recording --------------------------------------------------------------------------------


def _who(source: ActivitySource, agent: Agent | None, actor: str) -> tuple[int | None, str]:
    if agent is not None:
        if agent.id is None:
            raise ValueError("the agent has no id yet: flush it first")
        return agent.id, agent.email
    if source in (ActivitySource.web, ActivitySource.api):
        raise ValueError(f"a change from source {source.value} needs the agent who made it")
    default = MAIL_CLIENT if source == ActivitySource.imap else SYSTEM_ACTOR
    return None, (actor or default)[:320]


def _record(
    session: Session,
    conversation: Conversation,
    *,
    source: ActivitySource,
    agent: Agent | None,
    actor: str,
    action: str,
    details: dict[str, Any],
    bump: bool = True,
) -> Activity:
    """The activity row; bumps the conversation's version unless the caller's UPDATE did."""
    assert conversation.id is not None
    agent_id, label = _who(source, agent, actor)
    if bump:
        conversation.version += 1
        conversation.updated_at = utcnow()
        session.add(conversation)
    activity = Activity(
        conversation_id=conversation.id,
        created_at=utcnow(),
        source=source,
        agent_id=agent_id,
        actor=label,
        action=action,
        details=details,
    )
    session.add(activity)
    session.flush()
    return activity


def _write_back(
    session: Session,
    conversation: Conversation,
    activity: Activity,
    *,
    source: ActivitySource,
    kind: str,
    payload: dict[str, Any],
    message_id: int | None = None,
    tidy: bool = False,
) -> PendingImapAction | None:
    """The outbox row for the worker; none for changes read back from the mailbox, except a
    `tidy` one: marks of imapdesk's own that such a change left saying something stale."""
    if source == ActivitySource.imap and not tidy:
        return None
    action = PendingImapAction(
        mailbox_id=conversation.mailbox_id,
        conversation_id=conversation.id,
        message_id=message_id,
        activity_id=activity.id,
        kind=kind,
        payload=payload,
        created_at=utcnow(),
    )
    session.add(action)
    return action


def _write_flags(
    session: Session,
    conversation: Conversation,
    activity: Activity,
    change: FlagChange,
    *,
    source: ActivitySource,
    message_id: int | None = None,
) -> None:
    if change:
        _write_back(
            session,
            conversation,
            activity,
            source=source,
            kind="flags",
            payload=change.payload(),
            message_id=message_id,
        )


# --- claim, release, assign -------------------------------------------------------------------


def claim(
    session: Session,
    conversation: ConversationRef,
    agent: Agent | None,
    *,
    source: ActivitySource,
    actor: str = "",
) -> Conversation:
    """`agent` takes the conversation. Exactly one of two simultaneous claims wins; the other
    raises Conflict with `holder`. Claiming one's own is a no-op.

    From the mailbox (source imap) `agent` may be None: a mail client flagged it.
    """
    source = ActivitySource(source)
    if source == ActivitySource.imap:
        return _claim_from_mailbox(session, conversation, agent, actor=actor)
    if agent is None or agent.id is None:
        raise ValueError("claim needs the agent who claims")
    if not agent.is_active:
        raise Forbidden("this agent is deactivated")
    # no row lock before it: the conditional UPDATE alone decides between rivals
    current = _load(session, conversation, lock=False, agent=agent, source=source)
    free_or_mine = or_(
        col(Conversation.assignee_id).is_(None), col(Conversation.assignee_id) == agent.id
    )
    result = session.exec(
        update(Conversation)
        .where(
            col(Conversation.id) == current.id,
            col(Conversation.claimed).is_(False),
            free_or_mine,
        )
        .values(
            assignee_id=agent.id,
            claimed=True,
            version=col(Conversation.version) + 1,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    won = result.rowcount == 1
    session.refresh(current)
    if not won:
        if current.claimed and current.assignee_id == agent.id:
            return current
        holder = _holder(session, current) or MAIL_CLIENT_HOLDER
        raise Conflict(
            f"conversation {current.id} is claimed by {holder}",
            holder=holder,
            conversation_id=current.id,
        )
    activity = _record(
        session,
        current,
        source=source,
        agent=agent,
        actor=actor,
        action="claimed",
        details={"assignee": agent.email},
        bump=False,
    )
    change = claim_flags(
        agent.handle,
        keywords=_keywords(session, current),
        known_keywords=_assignee_keywords_on(session, current),
    )
    _write_flags(session, current, activity, change, source=source)
    return current


def _claim_from_mailbox(
    session: Session, conversation: ConversationRef, agent: Agent | None, *, actor: str
) -> Conversation:
    if agent is not None:
        return assign(session, conversation, agent, source=ActivitySource.imap, actor=actor)
    current = _load(session, conversation, lock=True)
    if current.claimed:
        return current
    current.claimed = True
    _record(
        session,
        current,
        source=ActivitySource.imap,
        agent=None,
        actor=actor,
        action="claimed",
        details={"holder": MAIL_CLIENT_HOLDER},
    )
    return current


def release(
    session: Session,
    conversation: ConversationRef,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    """Nobody holds it any more. From the web UI or the API only the holder or an admin may
    release it (Forbidden otherwise); releasing what nobody holds is a no-op."""
    source = ActivitySource(source)
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    if not current.claimed and current.assignee_id is None:
        return current
    holder = _holder(session, current)
    if source in (ActivitySource.web, ActivitySource.api):
        if agent is None:
            raise ValueError("release needs the agent who releases")
        if current.assignee_id != agent.id and not agent.is_admin:
            raise Forbidden(
                f"only {holder} or an admin can release conversation {current.id}",
                holder=holder,
                conversation_id=current.id,
            )
    known = _known_assignee_keywords(session, current)
    details: dict[str, Any] = {"from": holder}
    unknown = unknown_assignee_handle(session, current)
    if unknown:
        details["handle"] = unknown
    current.claimed = False
    current.assignee_id = None
    activity = _record(
        session,
        current,
        source=source,
        agent=agent,
        actor=actor,
        action="released",
        details=details,
    )
    keywords = _keywords(session, current)
    change = release_flags(keywords=keywords, known_keywords=known)
    _write_flags(session, current, activity, change, source=source)
    stale = _assignee_keywords_on(session, current) if keywords else set()
    if source == ActivitySource.imap and stale:
        # released from a mail client: the `$Assigned_` keyword no longer names a holder. It
        # goes, so that flagging the conversation again claims it for "someone via mail
        # client", not for the old holder. `\Flagged` on other copies is left alone (a
        # colleague may be flagging again right now): only inbound mail's flag claims.
        _write_back(
            session,
            current,
            activity,
            source=source,
            kind="flags",
            payload=FlagChange.of((), stale).payload(),
            tidy=True,
        )
    return current


def assign(
    session: Session,
    conversation: ConversationRef,
    assignee: Agent | str | None,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    """Give the conversation to `assignee` (an Agent, or an agent's handle), which claims it for
    them; None unassigns (and, except from the mailbox, releases the claim).

    A reassignment overrides whoever holds it: it is a deliberate act, unlike `claim`.
    """
    source = ActivitySource(source)
    from_mailbox = source == ActivitySource.imap
    target: Agent | None
    unknown_handle: str | None = None
    if isinstance(assignee, str):
        try:
            handle = normalize_handle(assignee)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="assignee") from exc
        target = session.exec(select(Agent).where(col(Agent.handle) == handle)).first()
        if target is None:
            if not from_mailbox:
                raise InvalidInput(f"no agent has the handle {handle!r}", field="assignee")
            unknown_handle = handle
    else:
        target = assignee
    if target is not None:
        if target.id is None:
            raise ValueError("the assignee has no id yet: flush it first")
        if not target.is_active and not from_mailbox:
            raise InvalidInput(f"the agent {target.email} is deactivated", field="assignee")

    current = _load(session, conversation, lock=True, agent=agent, source=source)
    previous = _holder(session, current) if current.assignee_id is not None else None
    previous_unknown = unknown_assignee_handle(session, current)
    known = _known_assignee_keywords(session, current)
    keywords = _keywords(session, current)

    if unknown_handle is not None:
        if current.claimed and current.assignee_id is None and previous_unknown == unknown_handle:
            return current
        current.assignee_id = None
        current.claimed = True
        _record(
            session,
            current,
            source=source,
            agent=agent,
            actor=actor,
            action="assigned",
            details={"from": previous or previous_unknown, "to": None, "handle": unknown_handle},
        )
        return current

    if target is None:
        if current.assignee_id is None and (
            previous_unknown is None if from_mailbox else not current.claimed
        ):
            return current
        details: dict[str, Any] = {"from": previous or previous_unknown}
        current.assignee_id = None
        if not from_mailbox:
            if previous is None and previous_unknown is None:
                details["from"] = MAIL_CLIENT_HOLDER
            current.claimed = False
        activity = _record(
            session,
            current,
            source=source,
            agent=agent,
            actor=actor,
            action="unassigned",
            details=details,
        )
        _write_flags(
            session,
            current,
            activity,
            release_flags(keywords=keywords, known_keywords=known),
            source=source,
        )
        return current

    if not from_mailbox and not access.can_see_mailbox(session, target, current.mailbox_id):
        raise InvalidInput(
            f"{target.email} has no access to this conversation's mailbox", field="assignee"
        )
    if current.assignee_id == target.id and current.claimed:
        return current
    current.assignee_id = target.id
    current.claimed = True
    activity = _record(
        session,
        current,
        source=source,
        agent=agent,
        actor=actor,
        action="assigned",
        details={"from": previous or previous_unknown, "to": target.email, "handle": target.handle},
    )
    _write_flags(
        session,
        current,
        activity,
        claim_flags(target.handle, keywords=keywords, known_keywords=known),
        source=source,
    )
    return current


# --- status -----------------------------------------------------------------------------------


def set_status(
    session: Session,
    conversation: ConversationRef,
    status: ConversationStatus | str,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    """Open, pending, closed, spam or deleted; written back as a move to the folder of that
    role (`move`, payload {"role": ...}).

    A change of status ends a snooze, whoever made it and from wherever (the web UI, the API,
    a bulk action, a mail client): left in place, the old snooze would reopen the conversation
    at its time once it is pending again. Setting the status it has changes nothing, the
    snooze included (the read-back of the snooze's own move to Pending is such a change).
    """
    source = ActivitySource(source)
    try:
        new = ConversationStatus(status)
    except ValueError as exc:
        choices = ", ".join(s.value for s in ConversationStatus)
        raise InvalidInput(f"status must be one of {choices}", field="status") from exc
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    if current.status == new:
        return current
    old = ConversationStatus(current.status)
    current.status = new
    activity = _record(
        session,
        current,
        source=source,
        agent=agent,
        actor=actor,
        action="status",
        details={"from": old.value, "to": new.value},
    )
    _write_back(
        session,
        current,
        activity,
        source=source,
        kind="move",
        payload={"role": role_for_status(new).value},
    )
    if current.snoozed_until is not None:
        _forget_snooze(session, current, source=source, agent=agent, actor=actor, bump=False)
    return current


def end_snooze(
    session: Session,
    conversation: ConversationRef,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    """Forget the snooze; the status stays what it is. Ending no snooze is a no-op."""
    source = ActivitySource(source)
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    if current.snoozed_until is not None:
        _forget_snooze(session, current, source=source, agent=agent, actor=actor, bump=True)
    return current


def _forget_snooze(
    session: Session,
    current: Conversation,
    *,
    source: ActivitySource,
    agent: Agent | None,
    actor: str,
    bump: bool,
) -> None:
    """`snoozed_until` cleared and the "unsnoozed" activity (nothing to write back: the
    mailbox knows no snooze)."""
    current.snoozed_until = None
    _record(
        session,
        current,
        source=source,
        agent=agent,
        actor=actor,
        action="unsnoozed",
        details={},
        bump=bump,
    )


# --- tags -------------------------------------------------------------------------------------


def normalize_tag(tag: str) -> str:
    """The tag without surrounding white space; InvalidInput unless 1 to 100 characters with
    no control characters."""
    if not isinstance(tag, str):
        raise InvalidInput("a tag is a string", field="tags")
    value = tag.strip()
    if not 1 <= len(value) <= TAG_MAX:
        raise InvalidInput(f"a tag is 1 to {TAG_MAX} characters", field="tags", tag=tag)
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        raise InvalidInput("a tag must not contain control characters", field="tags", tag=tag)
    return value


def tags_of(session: Session, conversation: ConversationRef) -> set[str]:
    session.flush()
    cid = _ref_id(conversation)
    return set(
        session.exec(select(ConversationTag.tag).where(col(ConversationTag.conversation_id) == cid))
    )


def _change_tags(
    session: Session,
    current: Conversation,
    add: set[str],
    remove: set[str],
    *,
    source: ActivitySource,
    agent: Agent | None,
    actor: str,
) -> Conversation:
    rows = {
        row.tag: row
        for row in session.exec(
            select(ConversationTag).where(col(ConversationTag.conversation_id) == current.id)
        )
    }
    add = add - set(rows)
    remove = remove & set(rows)
    if not add and not remove:
        return current
    assert current.id is not None
    for tag in sorted(add):
        session.add(ConversationTag(conversation_id=current.id, tag=tag))
    for tag in remove:
        session.delete(rows[tag])
    activities = [
        _record(
            session,
            current,
            source=source,
            agent=agent,
            actor=actor,
            action=action,
            details={"tags": sorted(tags)},
        )
        for action, tags in (("tagged", add), ("untagged", remove))
        if tags
    ]
    change = tag_flags(add, remove, keywords=_keywords(session, current))
    _write_flags(session, current, activities[0], change, source=source)
    return current


def set_tags(
    session: Session,
    conversation: ConversationRef,
    tags: Iterable[str],
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    """The conversation's tags become `tags`. From the mailbox, tags that cannot be keywords
    and tags whose keyword a folder of the mailbox refused or cannot keep (so the mailbox
    cannot show them) are kept."""
    source = ActivitySource(source)
    wanted = {normalize_tag(t) for t in tags}
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    have = tags_of(session, current)
    remove = have - wanted
    if source == ActivitySource.imap and remove:
        unkept = unkept_keyword_names(session, current.mailbox_id)
        remove = {
            t
            for t in remove
            if (keyword := tag_to_keyword(t)) is not None and keyword.lower() not in unkept
        }
    return _change_tags(
        session, current, wanted - have, remove, source=source, agent=agent, actor=actor
    )


def add_tag(
    session: Session,
    conversation: ConversationRef,
    tag: str,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    source = ActivitySource(source)
    value = normalize_tag(tag)
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    return _change_tags(session, current, {value}, set(), source=source, agent=agent, actor=actor)


def remove_tag(
    session: Session,
    conversation: ConversationRef,
    tag: str,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
) -> Conversation:
    source = ActivitySource(source)
    value = normalize_tag(tag)
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    return _change_tags(session, current, set(), {value}, source=source, agent=agent, actor=actor)


# --- read -------------------------------------------------------------------------------------


def mark_read(
    session: Session,
    conversation: ConversationRef,
    read: bool,
    *,
    source: ActivitySource,
    agent: Agent | None = None,
    actor: str = "",
    message: Message | int | None = None,
) -> Conversation:
    """Read: every inbound message becomes seen (`\\Seen` on the conversation's messages).
    Unread: its newest inbound message becomes unseen (as "mark unread" does in a mail
    client), not the whole history. `message`: that one message only (the read-back's case).
    """
    source = ActivitySource(source)
    current = _load(session, conversation, lock=True, agent=agent, source=source)
    inbound = list(
        session.exec(
            select(Message)
            .where(
                col(Message.conversation_id) == current.id,
                col(Message.direction) == Direction.inbound,
            )
            .order_by(col(Message.date).is_(None), col(Message.date), col(Message.id))
        )
    )
    one: Message | None = None
    if message is not None:
        mid = message if isinstance(message, int) else message.id
        one = session.get(Message, mid) if mid is not None else None
        if one is None or one.conversation_id != current.id:
            raise NotFound(f"no message {mid} in conversation {current.id}", message_id=mid)
        targets = [one] if one.direction == Direction.inbound else []
    elif read:
        targets = inbound
    else:
        targets = inbound[-1:]
    changed = [m for m in targets if m.seen != read]
    for m in changed:
        m.seen = read
        session.add(m)
    unread = any(not m.seen for m in inbound)
    if not changed and current.unread == unread:
        return current
    current.unread = unread
    activity = _record(
        session,
        current,
        source=source,
        agent=agent,
        actor=actor,
        action="read" if read else "unread",
        details={"messages": sorted(m.id for m in changed if m.id is not None)},
    )
    if not changed:
        return current
    if one is None and read:
        # the whole conversation: our own messages and notes carry \Seen already
        _write_flags(session, current, activity, seen_flags(True), source=source)
    else:
        for m in changed:
            _write_flags(
                session, current, activity, seen_flags(read), source=source, message_id=m.id
            )
    return current


# --- the log ----------------------------------------------------------------------------------


def activity_actor(activity: Activity, emails: dict[int, str]) -> str:
    """Who made it: the agent's email (from `emails`, else as recorded), else the label."""
    if activity.agent_id is not None and activity.agent_id in emails:
        return emails[activity.agent_id]
    return activity.actor


def agent_emails(session: Session, activities: Iterable[Activity]) -> dict[int, str]:
    ids = {a.agent_id for a in activities if a.agent_id is not None}
    if not ids:
        return {}
    rows = session.exec(select(Agent.id, Agent.email).where(col(Agent.id).in_(ids)))
    return {aid: email for aid, email in rows if aid is not None}
