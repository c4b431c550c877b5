"""Threading: Message-ID links, the conversation token, the guarded subject fallback, merges.

Every DB test runs on SQLite and PostgreSQL (the `engine` fixture). Messages come from real
files (the notmuch corpora and Dovecot's imaptest THREAD cases) parsed by `imapdesk.mail.parsing`,
stored
the way the ingest stores them (one row per Message-ID), then threaded in arrival order.
"""

from __future__ import annotations

import hashlib
import itertools
import mailbox as std_mailbox
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session, col, delete, select

from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.domain.conversations.aggregates import (
    conversation_subject_key,
    conversation_token,
    find_token,
    recompute_conversation,
)
from imapdesk.domain.mailboxes.config import ensure_folder
from imapdesk.domain.sync.ingest import ingest_batch
from imapdesk.domain.threads import (
    RULE_NEW,
    RULE_REFERENCES,
    RULE_SUBJECT,
    RULE_TOKEN,
    ThreadBatch,
    ThreadInput,
    reference_chain,
    thread_message,
    thread_references,
)
from imapdesk.kernel.models import (
    Conversation,
    ConversationTag,
    Direction,
    FolderRole,
    Mailbox,
    Message,
    MessageLocation,
    RawMessage,
    ThreadNode,
    as_utc,
)
from imapdesk.kernel.settings import Settings
from imapdesk.mail.imap import FetchedMessage
from imapdesk.mail.parsing import parse_message
from tests.support.corpus import CORPUS

NOTMUCH = CORPUS / "notmuch"
IMAPTEST = CORPUS / "imaptest-thread"
OUR = frozenset({"support@example.org"})


# --- helpers -----------------------------------------------------------------------------------


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": "sqlite://", "subject_fallback_days": 14}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def add_mailbox(session: Session, name: str = "support") -> int:
    box = Mailbox(
        name=name,
        address=f"{name}@example.org",
        imap_host="localhost",
        username=name,
        password_encrypted="x",
        created_at=datetime.now(UTC),
    )
    session.add(box)
    session.flush()
    assert box.id is not None
    return box.id


def store(
    session: Session,
    raw: bytes,
    mailbox_id: int,
    *,
    cfg: Settings | None = None,
    key: str | None = None,
    outbound: bool = False,
    seen: bool = False,
) -> Message:
    """Store and thread one message as the ingest does; a known Message-ID is not stored twice."""
    parsed = parse_message(raw)
    digest = hashlib.sha256(raw).hexdigest()
    if key is not None and key.startswith("copy-"):  # a copy stored as a message without one
        parsed.message_id = None
    message_id = parsed.message_id or key or f"sha256-{digest}@imapdesk.invalid"
    existing = session.exec(select(Message).where(Message.message_id == message_id)).first()
    if existing is not None:
        return existing
    direction = outbound or (parsed.from_email is not None and parsed.from_email in OUR)
    message = Message(
        message_id=message_id,
        has_message_id=parsed.message_id is not None,
        content_hash=digest,
        direction=Direction.outbound if direction else Direction.inbound,
        subject=parsed.subject,
        from_email=parsed.from_email,
        from_name=parsed.from_name,
        to=parsed.to,
        cc=parsed.cc,
        date=parsed.date.replace(tzinfo=UTC) if parsed.date else None,
        created_at=datetime.now(UTC),
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        seen=seen,
    )
    session.add(message)
    session.flush()
    conversation = thread_message(
        session, message, mailbox_id, settings=cfg or settings(), our_addresses=OUR
    )
    assert message.conversation_id == conversation.id
    return message


def mail(
    msgid: str | None,
    subject: str = "Order 123",
    *,
    sender: str = "alice@example.com",
    to: str = "support@example.org",
    date: datetime = datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
    refs: Sequence[str] = (),
    irt: str | None = None,
) -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    lines.append(f"Date: {format_datetime(date)}")
    if msgid:
        lines.append(f"Message-ID: <{msgid}>")
    if irt:
        lines.append(f"In-Reply-To: <{irt}>")
    if refs:
        lines.append("References: " + " ".join(f"<{r}>" for r in refs))
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def partition(session: Session, messages: Iterable[tuple[str, Message]]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for name, message in messages:
        session.refresh(message)
        assert message.conversation_id is not None
        groups.setdefault(message.conversation_id, set()).add(name)
    return {frozenset(g) for g in groups.values()}


def assert_no_cycles(session: Session) -> None:
    parents = {n.msgid: n.parent_msgid for n in session.exec(select(ThreadNode))}
    for start in parents:
        seen: set[str] = set()
        current: str | None = start
        while current is not None:
            assert current not in seen, f"cycle through {current}"
            seen.add(current)
            current = parents.get(current)


def assert_nodes_follow_conversations(session: Session) -> None:
    """Every node of a tree is in one conversation, the one of its messages."""
    nodes = {n.msgid: n for n in session.exec(select(ThreadNode))}
    for node in nodes.values():
        if node.parent_msgid is not None and node.parent_msgid in nodes:
            assert node.conversation_id == nodes[node.parent_msgid].conversation_id, node.msgid
        if node.message_id is not None:
            message = session.get(Message, node.message_id)
            assert message is not None
            assert message.conversation_id == node.conversation_id


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- pure helpers ------------------------------------------------------------------------------


def test_reference_chain() -> None:
    assert reference_chain(["a", "b", "a", "me"], "b", "me") == ["a", "b"]
    assert reference_chain([], "p", "me") == ["p"]
    # an In-Reply-To missing from References becomes the parent
    assert reference_chain(["typo"], "p", "me") == ["typo", "p"]
    long = [f"r{i}" for i in range(300)]
    chain = reference_chain(long, None, "me")
    assert len(chain) == 100 and chain[0] == "r0" and chain[-1] == "r299"


def test_token() -> None:
    assert conversation_token(42) == "[#42]"
    assert find_token("Re: [#42] Order 123") == 42
    assert find_token("Order 123 [#7]") == 7
    assert find_token("[support #42] no") is None
    assert find_token("") is None
    assert (
        conversation_subject_key("Re: [#42] Order 123")
        == conversation_subject_key("Order 123")
        == "order 123"
    )


# --- the notmuch default corpus ----------------------------------------------------------------


def expected_notmuch_threads() -> Counter[tuple[int, str]]:
    text = (NOTMUCH / "expected-default-corpus-threads.T080.txt").read_text()
    found: Counter[tuple[int, str]] = Counter()
    for line in text.splitlines():
        m = re.match(r"thread:\S+\s+\S+ \[(\d+)/(\d+)(?:\(\d+\))?\] [^;]*; (.*) \([^()]*\)$", line)
        assert m, line
        found[(int(m.group(2)), m.group(3))] += 1
    return found


@pytest.mark.parametrize("order", ["by-name", "shuffled-1", "shuffled-2"])
def test_notmuch_default_corpus(engine: Engine, order: str) -> None:
    paths = files(NOTMUCH / "test/corpora/default")
    assert len(paths) == 53
    if order != "by-name":
        random.Random(order).shuffle(paths)
    expected = expected_notmuch_threads()
    assert sum(expected.values()) == 24
    with Session(engine) as session:
        box = add_mailbox(session)
        stored = []
        for i, path in enumerate(paths):
            stored.append((path.name, store(session, path.read_bytes(), box)))
            if i % 7 == 0:
                session.commit()
        session.commit()
        conversations = session.exec(
            select(Conversation).where(col(Conversation.merged_into_id).is_(None))
        ).all()
        # notmuch names a thread after its oldest message minus one "Re: "; we keep it whole
        got = Counter(
            (c.message_count, re.sub(r"^(?i:re|aw|vs|sv): ", "", c.subject))
            for c in conversations
            if c.message_count
        )
        assert got == expected
        assert session.exec(select(Message)).all().__len__() == 52
        # the incremental result is the one the pure threading gives for the same order
        pure = thread_references(
            [
                ThreadInput(p.message_id, p.in_reply_to, p.references)
                for p in (parse_message(path.read_bytes()) for path in paths)
            ]
        )
        names = [path.name for path in paths]
        assert {frozenset(names[i] for i in g) for g in pure} == partition(session, stored)
        assert_no_cycles(session)
        assert_nodes_follow_conversations(session)
        # every aggregate kept incrementally equals the recomputed one
        for c in conversations:
            before = (c.message_count, c.subject, c.customer_email, c.last_message_at, c.unread)
            recompute_conversation(session, c, our_addresses=OUR)
            assert (c.message_count, c.subject, c.customer_email, c.last_message_at, c.unread) == (
                before
            )


# --- Dovecot imaptest THREAD=REFERENCES cases --------------------------------------------------


def top_level_groups(reply: str) -> list[set[int]]:
    """The message numbers of each top-level tree of a `* THREAD` reply."""
    groups: list[set[int]] = []
    depth = 0
    for token in re.findall(r"\(|\)|\d+", reply):
        if token == "(":
            if depth == 0:
                groups.append(set())
            depth += 1
        elif token == ")":
            depth -= 1
        else:
            groups[-1].add(int(token))
    return groups


def join(*partitions: Iterable[Iterable[str]]) -> set[frozenset[str]]:
    """The finest partition coarser than all of them (groups sharing an element are united)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for groups in partitions:
        for group in groups:
            items = list(group)
            for item in items:
                find(item)
            for other in items[1:]:
                parent[find(other)] = find(items[0])
    result: dict[str, set[str]] = {}
    for x in parent:
        result.setdefault(find(x), set()).add(x)
    return {frozenset(g) for g in result.values()}


IMAPTEST_CASES = ["thread", "thread2", "thread3", "thread4", "thread5", "thread6", "thread7"]
IMAPTEST_CASES.append("thread8")


@pytest.mark.parametrize("case", IMAPTEST_CASES)
def test_imaptest_references(engine: Engine, case: str) -> None:
    """Our conversations partition the messages like the top-level trees of Dovecot's reply.

    Stored like the ingest: one row per Message-ID, so copies with the same Message-ID are
    one message (thread2, thread3, thread7, thread8 have such copies; Dovecot threads a copy
    as a message without Message-ID). A message without one gets a synthetic unique id. An
    EXPUNGE removes a message only when no copy is left; conversations never split because of
    it, so after an expunge our partition is the expected one joined with the one before.
    """
    raws = [m.as_bytes() for m in std_mailbox.mbox(str(IMAPTEST / f"{case}.mbox"))]
    script = (IMAPTEST / case).read_text().splitlines()
    with Session(engine) as session:
        box = add_mailbox(session)
        present: list[int] = []  # mbox index of each sequence number
        stored: dict[int, Message] = {}
        next_append = 0
        before_expunge: set[frozenset[str]] | None = None
        last: set[frozenset[str]] = set()
        checks = 0

        def key(index: int) -> str:
            message = stored[index]
            return message.message_id

        def add(index: int) -> None:
            stored[index] = store(
                session, raws[index], box, key=f"noid-{case}-{index}@imapdesk.invalid"
            )
            present.append(index)

        lines = iter(script)
        for line in lines:
            if line.startswith("messages: all"):
                for index in range(len(raws)):
                    add(index)
                next_append = len(raws)
            elif line.startswith("ok append"):
                add(next_append)
                next_append += 1
            elif line.startswith("ok store"):
                seqs = [int(s) for s in line.split()[2].split(",")]
                if before_expunge is None:
                    before_expunge = last
                gone = [present[s - 1] for s in seqs]
                present[:] = [i for i in present if i not in gone]
                for index in gone:
                    if all(key(i) != key(index) for i in present):
                        session.delete(stored[index])
                session.flush()
            elif line.lower().startswith("ok thread references"):
                reply = next(lines)
                expected = [
                    {key(present[n - 1]) for n in group} for group in top_level_groups(reply)
                ]
                got = partition(session, ((key(i), stored[i]) for i in present))
                keys = {key(i) for i in present}
                wanted = join(expected)
                if before_expunge is not None:
                    wanted = join(wanted, (g & keys for g in before_expunge))
                assert got == wanted, f"{case}: {reply}"
                last = got
                checks += 1
                session.commit()
        assert checks
        assert_no_cycles(session)


def test_imaptest_thread_structure(engine: Engine) -> None:
    """`thread`: c's own parent (b) beats a->c inferred from b's References, c->b would loop."""
    raws = [m.as_bytes() for m in std_mailbox.mbox(str(IMAPTEST / "thread.mbox"))]
    with Session(engine) as session:
        box = add_mailbox(session)
        a, b, c = (store(session, raw, box) for raw in raws)
        assert a.conversation_id != b.conversation_id == c.conversation_id
        nodes = {n.msgid: n for n in session.exec(select(ThreadNode))}
        assert nodes["c@b"].parent_msgid is None and nodes["c@b"].parent_explicit
        assert nodes["b@b"].parent_msgid == "c@b" and nodes["b@b"].parent_explicit
        assert nodes["a@b"].parent_msgid is None
        assert (a.thread_rule, b.thread_rule, c.thread_rule) == (
            RULE_NEW,
            RULE_REFERENCES,
            RULE_NEW,
        )
        session.refresh(a)
        conversation = session.get(Conversation, a.conversation_id)
        split = session.get(Conversation, c.conversation_id)
        assert conversation is not None and split is not None
        assert conversation.message_count == 1 and split.message_count == 2


def test_imaptest_subject_merges(engine: Engine) -> None:
    """Dovecot's replies to thread3 and thread4 need RFC 5256 step 5: "Re: foo" joins "foo".

    thread4: b's only reference is a ghost. thread3: the second message repeats a's Message-ID
    (Dovecot threads it as a message without one; here it is stored so, too). Neither message
    has a From: no customer on either side counts as the same customer."""
    with Session(engine) as session:
        box = add_mailbox(session)
        session.commit()
        for case, key in (("thread3", "copy-thread3@imapdesk.invalid"), ("thread4", None)):
            first, second = std_mailbox.mbox(str(IMAPTEST / f"{case}.mbox"))
            a = store(session, first.as_bytes(), box)
            b = store(session, second.as_bytes(), box, key=key)
            assert a.id != b.id
            assert a.conversation_id == b.conversation_id, case
            assert b.thread_rule == RULE_SUBJECT
            session.rollback()


def test_pure_threading_on_imaptest() -> None:
    """The pure function gives Dovecot's first reply where no subject merging is involved."""
    for case in ["thread", "thread5", "thread6", "thread7"]:
        script = (IMAPTEST / case).read_text().splitlines()
        reply = next(
            script[i + 1]
            for i, line in enumerate(script)
            if line.lower().startswith("ok thread references")
        )
        expected = [{n - 1 for n in g} for g in top_level_groups(reply)]
        count = max(max(g) for g in expected) + 1  # thread5 appends one more message later
        raws = [m.as_bytes() for m in std_mailbox.mbox(str(IMAPTEST / f"{case}.mbox"))]
        parsed = [parse_message(raw) for raw in raws[:count]]
        got = thread_references(
            [ThreadInput(p.message_id, p.in_reply_to, p.references) for p in parsed]
        )
        if case == "thread7":  # message 4 repeats message 2's Message-ID: one message for us
            expected = [{0, 1, 2, 3}]
        assert sorted(got, key=min) == sorted(expected, key=min), case


def test_no_message_id_threads_by_its_own_references(engine: Engine) -> None:
    """thread6: two messages without Message-ID both referencing <a@b> are one thread."""
    with Session(engine) as session:
        box = add_mailbox(session)
        one = store(session, mail(None, "x", refs=["a@b"]), box, key="noid-1@imapdesk.invalid")
        two = store(
            session, mail(None, "y", sender="bob@example.com", refs=["a@b"]), box, key="noid-2@x"
        )
        assert not one.has_message_id
        assert one.conversation_id == two.conversation_id
        assert two.thread_rule == RULE_REFERENCES


# --- the notmuch threading corpora -------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_loop(engine: Engine, reverse: bool) -> None:
    paths = files(NOTMUCH / "test/corpora/broken/loop")
    if reverse:
        paths.reverse()
    with Session(engine) as session:
        box = add_mailbox(session)
        first, second = (store(session, p.read_bytes(), box) for p in paths)
        session.commit()
        assert first.conversation_id == second.conversation_id
        assert second.thread_rule == RULE_REFERENCES
        assert_no_cycles(session)
        roots = session.exec(select(ThreadNode).where(col(ThreadNode.parent_msgid).is_(None)))
        assert [n.message_id for n in roots] == [second.id]


def test_ghost_roots_in_every_order(engine: Engine) -> None:
    paths = files(NOTMUCH / "test/corpora/threading/ghost-root")
    rt = {
        "1529425589.M615261P21663.len:2,S",
        "1532672447.R3166642290392477575.len:2,S",
        "1532672447.R6968667928580738175.len:2,S",
    }
    expected = {frozenset(rt), frozenset(p.name for p in paths) - rt}
    for seed in range(3):
        order = list(paths)
        random.Random(seed).shuffle(order)
        with Session(engine) as session:
            box = add_mailbox(session, f"box{seed}")
            stored = [(p.name, store(session, p.read_bytes(), box)) for p in order]
            session.flush()
            assert partition(session, stored) == expected, seed
            pure = thread_references(
                [
                    ThreadInput(q.message_id, q.in_reply_to, q.references)
                    for q in (parse_message(p.read_bytes()) for p in order)
                ]
            )
            assert {frozenset(order[i].name for i in g) for g in pure} == expected
            assert_no_cycles(session)
            assert_nodes_follow_conversations(session)
            # ghosts: the Message-IDs only ever referenced
            ghosts = session.exec(select(ThreadNode).where(col(ThreadNode.message_id).is_(None)))
            assert {g.msgid for g in ghosts} >= {
                "nonexistent-message@example.org",
                "RT-Ticket-33575@xxxxxxx-xxxxxxxxxxxxxxxxx-xxxxxxxxx-xxxxxxxxx.de",
            }
            session.rollback()


def test_conflicting_parents(engine: Engine) -> None:
    """parent-priority: References with a typo; In-Reply-To names the real parent."""
    paths = files(NOTMUCH / "test/corpora/threading/parent-priority")
    import itertools

    for n, order in enumerate(itertools.permutations(paths)):
        with Session(engine) as session:
            box = add_mailbox(session, f"box{n}")
            stored = [store(session, p.read_bytes(), box) for p in order]
            assert len({m.conversation_id for m in stored}) == 1
            assert_no_cycles(session)
            child = session.exec(
                select(ThreadNode).where(ThreadNode.msgid == "B01-child@example.org")
            ).one()
            assert child.parent_explicit
            session.rollback()
    with Session(engine) as session:
        box = add_mailbox(session)
        for p in paths:  # child, grand-child, root
            store(session, p.read_bytes(), box)
        child = session.exec(
            select(ThreadNode).where(ThreadNode.msgid == "B01-child@example.org")
        ).one()
        assert child.parent_msgid == "B00-root@example.org"


# --- lkml: the incremental result equals the pure one in any order ------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_lkml_incremental_equals_pure(engine: Engine, seed: int) -> None:
    paths = files(NOTMUCH / "test/corpora/lkml")
    random.Random(seed).shuffle(paths)
    raws = [p.read_bytes() for p in paths]
    parsed = [parse_message(raw) for raw in raws]
    no_subject = settings(subject_fallback_days=0)
    with Session(engine) as session:
        box = add_mailbox(session)
        stored = []
        for i, raw in enumerate(raws):
            stored.append((str(i), store(session, raw, box, cfg=no_subject)))
            if i % 50 == 0:
                session.commit()
        session.commit()
        pure = thread_references(
            [ThreadInput(p.message_id, p.in_reply_to, p.references) for p in parsed]
        )
        assert {frozenset(str(i) for i in g) for g in pure} == partition(session, stored)
        assert_no_cycles(session)
        assert_nodes_follow_conversations(session)


# --- token -------------------------------------------------------------------------------------


def test_token_joins_same_mailbox_only(engine: Engine) -> None:
    with Session(engine) as session:
        box = add_mailbox(session)
        other_box = add_mailbox(session, "sales")
        first = store(session, mail("q1@c", "Broken printer"), box)
        cid = first.conversation_id
        assert cid is not None
        # Outlook dropped the headers; our token is still in the subject
        answer = store(
            session,
            mail("q2@c", f"AW: {conversation_token(cid)} Something else", sender="x@y.org"),
            box,
        )
        assert answer.conversation_id == cid and answer.thread_rule == RULE_TOKEN
        elsewhere = store(session, mail("q3@c", f"Re: {conversation_token(cid)} hi"), other_box)
        assert elsewhere.conversation_id != cid and elsewhere.thread_rule == RULE_NEW
        missing = store(session, mail("q4@c", "Re: [#999999] hi"), box)
        assert missing.thread_rule == RULE_NEW
        # References beat the token
        replied = store(session, mail("q5@c", f"Re: {conversation_token(cid)}", refs=["q3@c"]), box)
        assert replied.conversation_id == elsewhere.conversation_id
        assert replied.thread_rule == RULE_REFERENCES


def test_token_follows_merges(engine: Engine) -> None:
    with Session(engine) as session:
        box = add_mailbox(session)
        r1 = store(session, mail("r1@c", "First", refs=["p@c"]), box)
        r2 = store(session, mail("r2@c", "Second", sender="bob@b.org", refs=["q@c"]), box)
        assert r1.conversation_id != r2.conversation_id
        store(session, mail("q@c", "Late parent", refs=["p@c"]), box)
        session.refresh(r2)
        assert r1.conversation_id == r2.conversation_id
        loser = max(c.id for c in session.exec(select(Conversation)) if c.id is not None)
        late = store(session, mail("t@c", f"Re: [#{loser}] thanks", sender="z@z.org"), box)
        assert late.conversation_id == r1.conversation_id and late.thread_rule == RULE_TOKEN


# --- subject fallback --------------------------------------------------------------------------


def test_subject_fallback(engine: Engine) -> None:
    day = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    with Session(engine) as session:
        box = add_mailbox(session)
        other_box = add_mailbox(session, "sales")
        first = store(session, mail("s1@c", "Order 123 is late", date=day), box)
        cid = first.conversation_id
        # Outlook: no References, "RE:" kept
        outlook = store(
            session, mail("s2@c", "RE: Order 123 is late", date=day + timedelta(1)), box
        )
        assert outlook.conversation_id == cid and outlook.thread_rule == RULE_SUBJECT
        # re-sent without a prefix, within the window counted from the last message
        resent = store(session, mail("s3@c", "order 123 IS late", date=day + timedelta(14)), box)
        assert resent.conversation_id == cid and resent.thread_rule == RULE_SUBJECT
        # another customer
        other = store(
            session,
            mail("s4@c", "Re: Order 123 is late", sender="bob@b.org", date=day + timedelta(2)),
            box,
        )
        assert other.conversation_id != cid and other.thread_rule == RULE_NEW
        # too old: more than 14 days after the last message
        late = store(session, mail("s5@c", "Re: Order 123 is late", date=day + timedelta(29)), box)
        assert late.conversation_id != cid and late.thread_rule == RULE_NEW
        # another mailbox
        sales = store(session, mail("s6@c", "Re: Order 123 is late", date=day), other_box)
        assert sales.conversation_id not in (cid, late.conversation_id)
        # empty and too short subjects never match
        e1 = store(session, mail("e1@c", "", date=day), box)
        e2 = store(session, mail("e2@c", "Re:", date=day), box)
        h1 = store(session, mail("h1@c", "Hi", date=day), box)
        h2 = store(session, mail("h2@c", "RE: hi", date=day), box)
        assert len({e1.conversation_id, e2.conversation_id}) == 2
        assert len({h1.conversation_id, h2.conversation_id}) == 2
        # a reference to an unknown message does not contradict
        ghost = store(
            session,
            mail("s7@c", "Re: Order 123 is late", date=day + timedelta(30), refs=["lost@c"]),
            box,
        )
        assert ghost.conversation_id == late.conversation_id
        assert ghost.thread_rule == RULE_SUBJECT
        # the fallback is off with subject_fallback_days = 0
        off = store(
            session,
            mail("s8@c", "Re: Order 123 is late", date=day + timedelta(30)),
            box,
            cfg=settings(subject_fallback_days=0),
        )
        assert off.thread_rule == RULE_NEW
        assert_nodes_follow_conversations(session)


def test_batch_threading_sees_unflushed_changes(engine: Engine) -> None:
    """The ingest inserts a batch, then threads it without flushing in between: the subject
    lookup must judge a conversation by its unflushed aggregates (u2 moved its last message
    into u3's window), and flush nothing of the caller's."""
    day = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    raws = [
        mail("u1@c", "Broken lamp", date=day),
        mail("u2@c", "Re: Broken lamp", refs=["u1@c"], date=day + timedelta(days=13)),
        mail("u3@c", "Re: Broken lamp", date=day + timedelta(days=20)),
        mail("u4@c", "Re: Broken lamp", sender="bob@b.org", date=day + timedelta(days=20)),
    ]
    with Session(engine) as session:
        box = add_mailbox(session)
        session.commit()
        messages = []
        for raw in raws:
            p = parse_message(raw)
            messages.append(
                Message(
                    message_id=p.message_id or "",
                    content_hash="x",
                    subject=p.subject,
                    from_email=p.from_email,
                    to=p.to,
                    date=p.date.replace(tzinfo=UTC) if p.date else None,
                    created_at=day,
                    in_reply_to=p.in_reply_to,
                    references=p.references,
                )
            )
        session.add_all(messages)
        session.flush()
        flushes = []
        event.listen(session, "before_flush", lambda *_: flushes.append(1))
        for message in messages:
            thread_message(session, message, box, settings=settings(), our_addresses=OUR)
        assert not flushes
        u1, u2, u3, u4 = messages
        assert u1.conversation_id == u2.conversation_id == u3.conversation_id
        assert u3.thread_rule == RULE_SUBJECT
        assert u4.thread_rule == RULE_NEW
        session.commit()
        conversation = session.get(Conversation, u1.conversation_id)
        assert conversation is not None and conversation.message_count == 3
        assert conversation.last_message_at == day + timedelta(days=20)


def without(lines: list[bytes], *names: bytes) -> list[bytes]:
    return [line for line in lines if not line.lower().startswith(names)]


def damaged_corpus(seed: int) -> list[bytes]:
    """Synthetic support threads and the notmuch threading corpora, shuffled, with headers
    damaged the ways mail clients and people damage them: References dropped (Outlook), an
    In-Reply-To to another thread, references to messages never seen, a token in the subject,
    no Message-ID, no Date, copies. Enough splits, merges, ghosts, tokens and subject joins."""
    rnd = random.Random(seed)
    raws = list(synthetic_corpus(360, seed=seed, min_size=1_000, max_size=4_000))
    for corpus in ("default", "threading"):
        raws += [path.read_bytes() for path in files(NOTMUCH / "test/corpora" / corpus)]
    ids = [m.group(1) for r in raws if (m := re.search(rb"(?im)^message-id: *<([^>]+)>", r))]
    damaged = []
    for raw in raws:
        head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        lines = re.split(rb"\n(?![ \t])", head)
        roll = rnd.random()

        if roll < 0.12:
            lines = without(lines, b"references:")
        elif roll < 0.17:
            lines = without(lines, b"references:", b"in-reply-to:")
        elif roll < 0.24:
            lines = [*without(lines, b"references:", b"in-reply-to:")]
            lines.append(b"In-Reply-To: <" + rnd.choice(ids) + b">")
        elif roll < 0.29:
            lines.append(b"References: <" + rnd.choice(ids) + b">")
        elif roll < 0.33:
            lines.append(b"References: <ghost-%d@nowhere>" % rnd.randint(0, 20))
        elif roll < 0.37:
            token = b" [#%d]" % rnd.randint(1, 80)
            lines = [ln + token if ln.lower().startswith(b"subject:") else ln for ln in lines]
        elif roll < 0.39:
            lines = without(lines, b"message-id:")
        elif roll < 0.42:
            lines = without(lines, b"date:")
        damaged.append(b"\n".join(lines) + b"\n\n" + body)
    damaged += rnd.sample(damaged, 8)
    rnd.shuffle(damaged)
    return damaged


_RUNS = itertools.count()


def thread_all(
    engine: Engine,
    raws: Sequence[bytes],
    batch_size: int | Sequence[int] | None,
    ours: frozenset[str] = OUR,
) -> dict[str, list[tuple[Any, ...]]]:
    """Store and thread `raws` in order, one by one (`thread_message` alone) or in batches the
    way the ingest does (a batch inserted, then threaded with one `ThreadBatch`; sizes taken
    in turn); the result with ids replaced by their rank, so that runs on the same database
    compare."""
    day = datetime(2024, 6, 1, tzinfo=UTC)
    with Session(engine) as session:
        box = add_mailbox(session, f"box{next(_RUNS)}")
        session.commit()
        stored: set[str] = set()
        sizes = itertools.cycle(
            [batch_size or 1] if isinstance(batch_size, int | None) else batch_size
        )
        start = 0
        while start < len(raws):
            size = next(sizes)
            messages = []
            for index in range(start, min(start + size, len(raws))):
                p = parse_message(raws[index])
                digest = hashlib.sha256(raws[index]).hexdigest()
                key = p.message_id or f"sha256-{digest}@imapdesk.invalid"
                if key in stored:
                    continue
                stored.add(key)
                outbound = p.from_email is not None and p.from_email in ours
                messages.append(
                    Message(
                        message_id=key,
                        has_message_id=p.message_id is not None,
                        content_hash=digest,
                        direction=Direction.outbound if outbound else Direction.inbound,
                        subject=p.subject,
                        from_email=p.from_email,
                        from_name=p.from_name,
                        to=p.to,
                        date=as_utc(p.date),
                        created_at=day + timedelta(minutes=index),
                        in_reply_to=p.in_reply_to,
                        references=p.references,
                        seen=index % 3 == 0,
                    )
                )
            session.add_all(messages)
            session.flush()
            batch = None
            if batch_size is not None:
                batch = ThreadBatch(session)
                batch.prefetch(messages, box, settings=settings(), our_addresses=ours)
            for message in messages:
                thread_message(
                    session, message, box, settings=settings(), our_addresses=ours, batch=batch
                )
            if batch is not None:
                batch.flush()
            if batch_size is not None or start % 25 == 0:
                session.commit()
            start += size
        session.commit()
    return threading_result(engine)


def threading_result(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Messages, conversations and thread nodes with ids replaced by their rank, so that runs
    on the same database compare; then the tables are emptied for the next run."""
    with Session(engine) as session:
        conversations = session.exec(select(Conversation).order_by(col(Conversation.id))).all()
        cids = {c.id: rank for rank, c in enumerate(conversations)}
        cids[None] = None
        rows = session.exec(select(Message).order_by(col(Message.id))).all()
        mids = {m.id: rank for rank, m in enumerate(rows)}
        mids[None] = None
        result = {
            "messages": [(m.message_id, cids[m.conversation_id], m.thread_rule) for m in rows],
            "conversations": [
                (
                    cids[c.id],
                    c.subject,
                    c.subject_key,
                    c.customer_email,
                    c.customer_name,
                    c.message_count,
                    c.unread,
                    as_naive(c.last_message_at),
                    cids[c.merged_into_id],
                    c.status,
                )
                for c in conversations
            ],
            "nodes": sorted(
                (
                    n.msgid,
                    n.parent_msgid,
                    n.parent_explicit,
                    mids[n.message_id],
                    cids[n.conversation_id],
                )
                for n in session.exec(select(ThreadNode))
            ),
        }
        assert_no_cycles(session)
        # the next run starts on empty tables, with the same ids (tokens name conversation ids)
        if engine.dialect.name == "postgresql":
            session.execute(
                text("TRUNCATE threadnode, message, conversation RESTART IDENTITY CASCADE")
            )
        else:
            for table in (ThreadNode, Message, Conversation):
                session.execute(delete(table))
        session.commit()
    return result


def as_naive(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC).replace(tzinfo=None) if value and value.tzinfo else value


def test_batch_threading_equals_one_by_one(engine: Engine) -> None:
    """A batch threaded with a `ThreadBatch` (what the batch reads up front, nodes written at
    the end) ends exactly as the same messages threaded one by one: the same conversations,
    rules, aggregates, merges and thread nodes, in small batches and in one large one."""
    raws = damaged_corpus(5)
    ours = frozenset({"support@example.test"})
    one_by_one = thread_all(engine, raws, None, ours)
    rules = Counter(rule for _, _, rule in one_by_one["messages"])
    assert all(rules[rule] > 5 for rule in (RULE_NEW, RULE_REFERENCES, RULE_TOKEN, RULE_SUBJECT))
    assert sum(1 for c in one_by_one["conversations"] if c[8] is not None) > 5  # merged
    for batch_size in (13, 500):
        batched = thread_all(engine, raws, batch_size, ours)
        for part in ("messages", "conversations", "nodes"):
            assert batched[part] == one_by_one[part], (batch_size, part)


def test_ingest_threads_a_batch_as_one_by_one(engine: Engine, tmp_path: Path) -> None:
    """The ingest threads a batch with a `ThreadBatch` and inserts each new message only once
    it is threaded (before any flush or thread node needs it): the messages end where threading
    one by one puts them, each with its raw bytes and location."""
    raws = damaged_corpus(6)
    ours = frozenset({"support@example.test"})
    one_by_one = thread_all(engine, raws, None, ours)
    with Session(engine) as session:
        box = add_mailbox(session, "ingest")
        folder = ensure_folder(session, box, "INBOX", FolderRole.inbox, watched=True)
        session.commit()
        for start in range(0, len(raws), 60):
            fetched = [
                FetchedMessage(
                    uid=uid + 1, raw=raws[uid], flags=("\\Seen",) if uid % 3 == 0 else ()
                )
                for uid in range(start, min(start + 60, len(raws)))
            ]
            mailbox = session.get(Mailbox, box)
            assert mailbox is not None
            result = ingest_batch(
                session,
                settings=settings(data_dir=tmp_path),
                mailbox=mailbox,
                folder=folder,
                fetched=fetched,
                our_addresses=ours,
            )
            assert result.new_locations == len(fetched)
            session.commit()
        messages = len(session.exec(select(Message)).all())
        assert len(session.exec(select(RawMessage)).all()) == messages
        assert len(session.exec(select(MessageLocation)).all()) == len(raws)
    ingested = threading_result(engine)
    assert ingested["messages"] == one_by_one["messages"]
    assert ingested["nodes"] == one_by_one["nodes"]
    # the same but for when the messages without a Date were stored (now, in the ingest)
    without_time = [c[:7] + c[8:] for c in one_by_one["conversations"]]
    assert [c[:7] + c[8:] for c in ingested["conversations"]] == without_time


def test_batch_subject_lookup_sees_conversations_the_batch_changed(engine: Engine) -> None:
    """What a batch reads up front for its subject lookups cannot know what the batch changes:
    u2 brings a conversation last active two months ago into u3's window; c0, older than c1,
    gives c1's conversation (created by the batch) another subject key, c2's."""
    day = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    bob = "bob@b.org"
    raws = [
        mail("u1@c", "Broken lamp", date=day),
        mail("u2@c", "Re: Broken lamp", refs=["u1@c"], date=day + timedelta(days=60)),
        mail("u3@c", "Re: Broken lamp", date=day + timedelta(days=65)),
        mail("c1@c", "Re: Something else", sender=bob, refs=["c0@c"], date=day + timedelta(10)),
        mail("c0@c", "Original question", sender=bob, date=day + timedelta(days=5)),
        mail("c2@c", "Original question", sender=bob, date=day + timedelta(days=12)),
    ]
    one_by_one = thread_all(engine, raws, None)
    batched = thread_all(engine, raws, (1, 5))
    assert batched == one_by_one
    conversation = {msgid: cid for msgid, cid, _ in batched["messages"]}
    rule = {msgid: rule for msgid, _, rule in batched["messages"]}
    assert conversation["u1@c"] == conversation["u2@c"] == conversation["u3@c"]
    assert conversation["c1@c"] == conversation["c0@c"] == conversation["c2@c"]
    assert rule["u3@c"] == rule["c2@c"] == RULE_SUBJECT


def test_subject_fallback_refuses_contradicting_references(engine: Engine) -> None:
    """c's References put it beside a (conversation X) but its own parent takes it out of X:
    it must not join Y by subject, Y being another conversation than the one it references."""
    with Session(engine) as session:
        box = add_mailbox(session)
        y = store(session, mail("y1@c", "Invoice"), box)
        a = store(session, mail("a@c", "Other topic", sender="bob@b.org"), box)
        b = store(
            session, mail("b@c", "Re: Other topic", sender="bob@b.org", refs=["a@c", "c@c"]), box
        )
        assert b.conversation_id == a.conversation_id
        c = store(session, mail("c@c", "Re: Invoice", refs=["a@c", "b@c"]), box)
        session.refresh(b)
        assert c.conversation_id not in (y.conversation_id, a.conversation_id)
        assert b.conversation_id == c.conversation_id
        assert c.thread_rule == RULE_NEW
        assert_no_cycles(session)
        assert_nodes_follow_conversations(session)


def test_split_off_rejoins_by_subject(engine: Engine) -> None:
    """`thread` again, with one subject and one customer: RFC 5256 step 5 would merge the two
    trees by subject, and so does the fallback (c references b only, in no other conversation)."""
    with Session(engine) as session:
        box = add_mailbox(session)
        a = store(session, mail("a@c", "Order 123"), box)
        b = store(session, mail("b@c", "Re: Order 123", refs=["a@c", "c@c"]), box)
        c = store(session, mail("c@c", "Re: Order 123", refs=["b@c"]), box)
        session.refresh(b)
        assert a.conversation_id == b.conversation_id == c.conversation_id
        assert c.thread_rule == RULE_SUBJECT
        assert_nodes_follow_conversations(session)
        conversation = session.get(Conversation, a.conversation_id)
        assert conversation is not None and conversation.message_count == 3
        assert session.exec(select(Conversation)).all() == [conversation]


def test_own_parent_elsewhere_in_the_same_tree(engine: Engine) -> None:
    with Session(engine) as session:
        box = add_mailbox(session)
        a = store(session, mail("a@c", "Topic"), box)
        b = store(session, mail("b@c", "Foo", sender="bob@b.org", refs=["a@c", "c@c"]), box)
        # c's own parent x is below a too: c moves within the tree, nothing splits
        c = store(session, mail("c@c", "Bar", sender="carl@c.org", refs=["a@c", "x@c"]), box)
        session.refresh(b)
        assert a.conversation_id == b.conversation_id == c.conversation_id
        assert len(session.exec(select(Conversation)).all()) == 1
        node = session.exec(select(ThreadNode).where(ThreadNode.msgid == "c@c")).one()
        assert node.parent_msgid == "x@c" and node.parent_explicit


def test_ghost_remnant_leaves_the_conversation(engine: Engine) -> None:
    """b (References: g c) puts c under ghost g; c's own parent h takes it away: g, now a
    tree without messages, is in no conversation, and a later reply to g starts its own."""
    raws = [
        mail("b@c", "One", refs=["g@c", "c@c"]),
        mail("c@c", "Two", sender="bob@b.org", refs=["h@c"]),
        mail("d@c", "Three", sender="carl@c.org", refs=["g@c"]),
    ]
    with Session(engine) as session:
        box = add_mailbox(session)
        b, c, d = (store(session, raw, box) for raw in raws)
        session.refresh(b)
        assert b.conversation_id == c.conversation_id != d.conversation_id
        assert d.thread_rule == RULE_NEW
        g = session.exec(select(ThreadNode).where(ThreadNode.msgid == "g@c")).one()
        assert g.conversation_id == d.conversation_id
        assert_nodes_follow_conversations(session)
    parsed = [parse_message(raw) for raw in raws]
    pure = thread_references(
        [ThreadInput(p.message_id, p.in_reply_to, p.references) for p in parsed]
    )
    assert pure == [{0, 1}, {2}]


# --- merges ------------------------------------------------------------------------------------


def test_late_parent_merges_conversations_with_tags(engine: Engine) -> None:
    with Session(engine) as session:
        box = add_mailbox(session)
        r1 = store(session, mail("r1@c", "Help", refs=["p@c"]), box)
        r2 = store(session, mail("r2@c", "Help!!", sender="bob@b.org", refs=["p@c", "q@c"]), box)
        r3 = store(session, mail("r3@c", "Other", sender="carl@c.org", refs=["x@c"]), box)
        # r2 references p@c too: it is in r1's tree already
        assert r1.conversation_id == r2.conversation_id != r3.conversation_id
        keep_id, gone_id = r1.conversation_id, r3.conversation_id
        assert keep_id is not None and gone_id is not None and keep_id < gone_id
        session.add_all(
            [
                ConversationTag(conversation_id=keep_id, tag="billing"),
                ConversationTag(conversation_id=gone_id, tag="billing"),
                ConversationTag(conversation_id=gone_id, tag="vip"),
            ]
        )
        session.commit()
        # x@c arrives and names p@c as its parent: the two trees become one
        late = store(session, mail("x@c", "Re: Help", sender="dan@d.org", refs=["p@c"]), box)
        session.commit()
        assert late.conversation_id == keep_id and late.thread_rule == RULE_REFERENCES
        session.refresh(r3)
        assert r3.conversation_id == keep_id
        keep = session.get(Conversation, keep_id)
        gone = session.get(Conversation, gone_id)
        assert keep is not None and gone is not None
        assert gone.merged_into_id == keep_id and gone.message_count == 0
        assert keep.message_count == 4 and keep.merged_into_id is None
        tags = session.exec(select(ConversationTag)).all()
        assert {(t.conversation_id, t.tag) for t in tags} == {
            (keep_id, "billing"),
            (keep_id, "vip"),
        }
        assert {n.conversation_id for n in session.exec(select(ThreadNode))} == {keep_id}
        # the first message by date gives the subject
        assert keep.subject == "Help"


def test_reply_referencing_two_conversations_merges_them(engine: Engine) -> None:
    with Session(engine) as session:
        box = add_mailbox(session)
        a = store(session, mail("a@c", "First question"), box)
        b = store(session, mail("b@c", "Second question", sender="bob@b.org"), box)
        assert a.conversation_id != b.conversation_id
        both = store(session, mail("m@c", "Re: both", refs=["a@c", "b@c"]), box)
        session.refresh(a)
        session.refresh(b)
        assert a.conversation_id == b.conversation_id == both.conversation_id


def test_deleted_message_does_not_split_and_comes_back(engine: Engine) -> None:
    with Session(engine) as session:
        box = add_mailbox(session)
        a = store(session, mail("a@c", "Topic"), box)
        b = store(session, mail("b@c", "Re: Topic", sender="bob@b.org", refs=["a@c"]), box)
        c = store(session, mail("c@c", "Re: Topic", sender="carl@c.org", refs=["a@c", "b@c"]), box)
        cid = a.conversation_id
        session.delete(b)
        session.commit()
        session.refresh(c)
        assert c.conversation_id == cid
        again = store(session, mail("b@c", "Re: Topic", sender="bob@b.org", refs=["a@c"]), box)
        assert again.conversation_id == cid and again.thread_rule == RULE_REFERENCES


# --- directions and aggregates -----------------------------------------------------------------


def test_outbound_from_sent_joins_and_customer(engine: Engine) -> None:
    day = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    with Session(engine) as session:
        box = add_mailbox(session)
        question = store(
            session, mail("in1@c", "Refund", sender="Alice <alice@example.com>", date=day), box
        )
        reply = store(
            session,
            mail(
                "out1@c",
                "Re: Refund",
                sender="support@example.org",
                to="alice@example.com",
                refs=["in1@c"],
                date=day + timedelta(hours=1),
            ),
            box,
            outbound=True,
            seen=True,
        )
        assert reply.direction == Direction.outbound
        assert reply.conversation_id == question.conversation_id
        assert reply.thread_rule == RULE_REFERENCES
        conversation = session.get(Conversation, question.conversation_id)
        assert conversation is not None
        assert conversation.customer_email == "alice@example.com"
        assert conversation.customer_name == "Alice"
        assert conversation.message_count == 2 and conversation.unread
        assert conversation.last_message_at == day + timedelta(hours=1)

        # an agent writes first (from a mail client): the customer is the recipient
        started = store(
            session,
            mail(
                "out2@c",
                "Your parcel",
                sender="support@example.org",
                to="Bob <bob@b.org>, support@example.org",
                date=day,
            ),
            box,
            outbound=True,
            seen=True,
        )
        outbound_first = session.get(Conversation, started.conversation_id)
        assert outbound_first is not None
        assert outbound_first.customer_email == "bob@b.org"
        assert not outbound_first.unread
        # Bob answers from Outlook without References: the subject finds it
        answer = store(
            session,
            mail("in2@c", "AW: Your parcel", sender="bob@b.org", date=day + timedelta(days=2)),
            box,
        )
        assert answer.conversation_id == started.conversation_id
        assert answer.thread_rule == RULE_SUBJECT
        assert outbound_first.unread and outbound_first.message_count == 2


def test_aggregates_out_of_order(engine: Engine) -> None:
    day = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    with Session(engine) as session:
        box = add_mailbox(session)
        reply = store(
            session,
            mail("r@c", "Re: Question", sender="bob@b.org", refs=["q@c"], date=day + timedelta(1)),
            box,
            seen=True,
        )
        conversation = session.get(Conversation, reply.conversation_id)
        assert conversation is not None
        assert conversation.subject == "Re: Question" and not conversation.unread
        assert conversation.customer_email == "bob@b.org"
        question = store(session, mail("q@c", "Question", date=day), box)
        assert question.conversation_id == conversation.id
        assert question.thread_rule == RULE_REFERENCES
        assert conversation.subject == "Question"
        assert conversation.subject_key == "question"
        assert conversation.customer_email == "alice@example.com"
        assert conversation.unread and conversation.message_count == 2
        assert conversation.last_message_at == day + timedelta(1)
        version = conversation.version
        before = (
            conversation.subject,
            conversation.customer_email,
            conversation.message_count,
            conversation.unread,
            conversation.last_message_at,
        )
        recompute_conversation(session, conversation)
        assert conversation.version == version + 1
        assert before == (
            conversation.subject,
            conversation.customer_email,
            conversation.message_count,
            conversation.unread,
            conversation.last_message_at,
        )
