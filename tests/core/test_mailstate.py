"""The mailbox mapping as pure functions: roles, assignee and tag keywords, flags to write,
and the state a conversation's locations show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imapdesk.domain.mailstate import (
    THUNDERBIRD_LABELS,
    DerivedState,
    FlagChange,
    LocationFacts,
    MessageFacts,
    WantedState,
    assignee_keyword,
    claim_flags,
    derive_state,
    desired_flags,
    handle_from_keyword,
    keyword_limit,
    keyword_limit_known,
    keyword_to_tag,
    keywords_for_tag,
    keywords_kept,
    release_flags,
    role_for_status,
    seen_flags,
    status_for_role,
    tag_flags,
    tag_to_keyword,
)
from imapdesk.kernel.models import ConversationStatus, Direction, FolderRole

S = ConversationStatus
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


# --- roles ------------------------------------------------------------------------------------


def test_status_and_role_round_trip() -> None:
    expected = {
        S.open: FolderRole.inbox,
        S.pending: FolderRole.pending,
        S.closed: FolderRole.archive,
        S.spam: FolderRole.junk,
        S.deleted: FolderRole.trash,
    }
    for status, role in expected.items():
        assert role_for_status(status) == role
        assert role_for_status(status.value) == role
        assert status_for_role(role) == status
        assert status_for_role(role.value) == status
    for other in (FolderRole.sent, FolderRole.notes, FolderRole.other, None, "nonsense"):
        assert status_for_role(other) is None


# --- assignee keyword -------------------------------------------------------------------------


def test_assignee_keyword_round_trip() -> None:
    for handle in ("alice", "bob-2", "a_b", "x" * 32, "0"):
        keyword = assignee_keyword(handle)
        assert keyword == f"$Assigned_{handle}"
        assert handle_from_keyword(keyword) == handle
    assert assignee_keyword(" Alice ") == "$Assigned_alice"
    # keywords match case-insensitively; handles come back lowercased
    assert handle_from_keyword("$assigned_Bob") == "bob"
    assert handle_from_keyword("$ASSIGNED_carol") == "carol"


@pytest.mark.parametrize("handle", ["", "x" * 33, "a b", "a.b", "élan", "a$b"])
def test_assignee_keyword_refuses_bad_handles(handle: str) -> None:
    with pytest.raises(ValueError):
        assignee_keyword(handle)
    assert handle_from_keyword("$Assigned_" + handle) is None


@pytest.mark.parametrize("keyword", ["\\Flagged", "$Forwarded", "Assigned_bob", "vip", "$Assign"])
def test_handle_from_other_keywords(keyword: str) -> None:
    assert handle_from_keyword(keyword) is None


# --- tag keyword ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["vip", "VIP", "billing/eu", "follow-up", "a+b", "ticket#12", "list[1", "x" * 100]
)
def test_tags_that_are_atoms_are_keywords_verbatim(tag: str) -> None:
    assert tag_to_keyword(tag) == tag
    assert keyword_to_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    [
        "two words",
        "a(b",
        "a)b",
        "a{b",
        "100%",
        "a*",
        'say "hi"',
        "back\\slash",
        "a]b",
        "tab\there",
        "del\x7f",
        "café",
        "日本",
        "",
        "x" * 101,
        "$money",
        "$Assigned_bob",
        "Junk",
        "nonjunk",
        "NotJunk",
        "Old",
    ],
)
def test_tags_that_cannot_be_keywords_stay_in_the_database(tag: str) -> None:
    assert tag_to_keyword(tag) is None
    assert keywords_for_tag(tag) == ()


@pytest.mark.parametrize(
    "keyword",
    [
        "\\Seen",
        "\\Flagged",
        "\\Answered",
        "\\Deleted",
        "\\Draft",
        "\\Recent",
        "$Assigned_bob",
        "$Forwarded",
        "$MDNSent",
        "$Junk",
        "$NotJunk",
        "$Phishing",
        "$Important",
        "$MailFlagBit0",
        "Junk",
        "NonJunk",
        "junk",
        "NotJunk",
        "Old",
        "",
    ],
)
def test_keywords_that_are_not_tags(keyword: str) -> None:
    assert keyword_to_tag(keyword) is None


def test_thunderbird_labels_map_both_ways() -> None:
    assert THUNDERBIRD_LABELS["$label4"] == "To Do"
    for keyword, tag in THUNDERBIRD_LABELS.items():
        assert keyword_to_tag(keyword) == tag
        assert keyword_to_tag(keyword.upper()) == tag
        assert tag_to_keyword(tag) == keyword
    # set verbatim by another client, it is the same tag, and removing the tag removes both
    assert keyword_to_tag("Important") == "Important"
    assert keywords_for_tag("Important") == ("$label1", "Important")
    assert keywords_for_tag("To Do") == ("$label4",)
    assert keyword_to_tag("$label6") is None


def test_tag_keyword_round_trip_is_exact() -> None:
    tags = [chr(c) for c in range(0x20, 0x80)] + ["vip", "To Do", "a b", "$x", "Old", "old"]
    tags += [f"t{chr(c)}t" for c in range(0x00, 0x80)]
    for tag in tags:
        keyword = tag_to_keyword(tag)
        if keyword is not None:
            assert keyword_to_tag(keyword) == tag, tag


# --- capabilities ----------------------------------------------------------------------------


def test_keywords_kept() -> None:
    assert keywords_kept({"permanent_flags": ["\\Seen", "\\Flagged", "\\*"]})
    assert not keywords_kept({"permanent_flags": ["\\Seen", "\\Flagged", "\\Deleted"]})
    assert not keywords_kept({"permanent_flags": []})
    # permanent_flags decides over the older boolean
    assert not keywords_kept({"permanent_flags": ["\\Seen"], "keywords": True})
    assert keywords_kept({"keywords": True})
    assert not keywords_kept({"keywords": False})
    assert not keywords_kept({})
    assert not keywords_kept(None)
    # a folder at its limit (Cyrus at 128 user flags) lists the keywords it keeps, without \*
    assert keywords_kept({"permanent_flags": ["\\Seen", "\\Flagged", "$label1", "urgent"]})


def test_keyword_limit() -> None:
    assert keyword_limit({"keyword_limit": 26}) == 26
    assert keyword_limit({"keyword_limit": None}) is None
    assert keyword_limit({"keyword_limit": True}) is None
    assert keyword_limit({}) is None
    assert keyword_limit({"keyword_limit": "unlimited"}) is None
    assert keyword_limit_known({"keyword_limit": "unlimited"})
    assert keyword_limit_known({"keyword_limit": 128})
    assert not keyword_limit_known({"keyword_limit": None})
    assert not keyword_limit_known({})


# --- flags to write ---------------------------------------------------------------------------


def test_flag_change_orders_and_never_both() -> None:
    change = FlagChange.of(["$b", "\\Seen", "$a", "\\Flagged"], ["\\Seen", "x"])
    assert change.add == ("\\Flagged", "\\Seen", "$a", "$b")
    assert change.remove == ("x",)
    assert change.payload() == {"add": ["\\Flagged", "\\Seen", "$a", "$b"], "remove": ["x"]}
    assert not FlagChange.of()


def test_claim_and_release_flags() -> None:
    known = {"$Assigned_bob", "$Assigned_alice", "vip"}
    assert claim_flags("alice", keywords=True, known_keywords=known).payload() == {
        "add": ["\\Flagged", "$Assigned_alice"],
        "remove": ["$Assigned_bob"],
    }
    assert claim_flags("alice", keywords=False, known_keywords=known).payload() == {
        "add": ["\\Flagged"],
        "remove": [],
    }
    assert claim_flags(None, keywords=True, known_keywords=known).payload() == {
        "add": ["\\Flagged"],
        "remove": ["$Assigned_alice", "$Assigned_bob"],
    }
    assert release_flags(keywords=True, known_keywords=known).payload() == {
        "add": [],
        "remove": ["\\Flagged", "$Assigned_alice", "$Assigned_bob"],
    }
    assert release_flags(keywords=False, known_keywords=known).payload() == {
        "add": [],
        "remove": ["\\Flagged"],
    }


def test_tag_and_seen_flags() -> None:
    change = tag_flags({"vip", "two words", "To Do"}, {"Important", "old tag"}, keywords=True)
    assert change.payload() == {
        "add": ["$label4", "vip"],
        "remove": ["$label1", "Important"],
    }
    assert not tag_flags({"vip"}, {"x"}, keywords=False)
    assert not tag_flags({"two words"}, set(), keywords=True)
    assert seen_flags(True).payload() == {"add": ["\\Seen"], "remove": []}
    assert seen_flags(False).payload() == {"add": [], "remove": ["\\Seen"]}


def test_desired_flags_full_reconcile() -> None:
    state = WantedState(claimed=True, assignee_handle="alice", tags=frozenset({"vip", "a b"}))
    current = ["\\Seen", "$Assigned_bob", "old-tag", "$Forwarded", "NonJunk", "\\Answered"]
    change = desired_flags(state, Direction.inbound, seen=False, keywords=True, current=current)
    assert change.add == ("\\Flagged", "$Assigned_alice", "vip")
    # foreign keywords and \\Answered stay
    assert change.remove == ("\\Seen", "$Assigned_bob", "old-tag")

    # without keywords only the system flags are managed
    change = desired_flags(state, Direction.inbound, seen=True, keywords=False, current=current)
    assert change == FlagChange.of(["\\Flagged"], [])

    # our own messages keep their \\Seen whatever `seen` says
    change = desired_flags(
        WantedState(), Direction.outbound, seen=False, keywords=True, current=["\\Seen", "vip"]
    )
    assert change == FlagChange.of([], ["vip"])

    # a tag already there under another of its keywords is left alone
    change = desired_flags(
        WantedState(tags=frozenset({"Important"})),
        Direction.inbound,
        seen=True,
        keywords=True,
        current=["\\Seen", "Important"],
    )
    assert not change

    # in step already: nothing to do
    state = WantedState(claimed=True, assignee_handle="alice", tags=frozenset({"vip"}))
    done = ["\\Seen", "\\Flagged", "$Assigned_alice", "vip"]
    assert not desired_flags(state, Direction.inbound, seen=True, keywords=True, current=done)


# --- derive_state -----------------------------------------------------------------------------


def loc(role: FolderRole | str, *flags: str, watched: bool = False) -> LocationFacts:
    return LocationFacts(role=role, watched=watched, flags=frozenset(flags))


INBOX = FolderRole.inbox


def msg(
    key: int,
    minutes: int | None,
    *locations: LocationFacts,
    direction: Direction = Direction.inbound,
) -> MessageFacts:
    date = None if minutes is None else T0 + timedelta(minutes=minutes)
    return MessageFacts(key=key, direction=direction, date=date, locations=tuple(locations))


def status(*messages: MessageFacts) -> ConversationStatus | None:
    return derive_state(messages).status


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (FolderRole.inbox, S.open),
        (FolderRole.pending, S.pending),
        (FolderRole.archive, S.closed),
        (FolderRole.junk, S.spam),
        (FolderRole.trash, S.deleted),
    ],
)
def test_status_from_the_folder_of_a_single_message(
    role: FolderRole, expected: ConversationStatus
) -> None:
    assert status(msg(1, 0, loc(role, watched=role == INBOX))) == expected


def test_a_watched_folder_of_no_role_is_the_inbox() -> None:
    assert status(msg(1, 0, loc(FolderRole.other, watched=True))) == S.open
    assert status(msg(1, 0, loc(FolderRole.other))) is None


def test_open_while_any_inbound_message_is_in_a_watched_folder() -> None:
    # the newest was archived, an older one still sits in INBOX: still open
    assert status(msg(1, 0, loc(INBOX)), msg(2, 10, loc(FolderRole.archive))) == S.open
    # all out of the inbox: closed
    assert (
        status(msg(1, 0, loc(FolderRole.archive)), msg(2, 10, loc(FolderRole.archive))) == S.closed
    )


def test_the_newest_inbound_message_decides_outside_the_inbox() -> None:
    messages = (msg(1, 0, loc(FolderRole.archive)), msg(2, 10, loc(FolderRole.pending)))
    assert status(*messages) == S.pending
    messages = (msg(1, 20, loc(FolderRole.archive)), msg(2, 10, loc(FolderRole.pending)))
    assert status(*messages) == S.closed
    # an undated message counts as the oldest
    assert status(msg(1, None, loc(FolderRole.junk)), msg(2, 0, loc(FolderRole.trash))) == S.deleted
    # equal dates: the higher key is newer
    assert status(msg(1, 0, loc(FolderRole.junk)), msg(2, 0, loc(FolderRole.trash))) == S.deleted


def test_a_new_inbound_reply_reopens() -> None:
    assert status(msg(1, 0, loc(FolderRole.archive)), msg(2, 10, loc(INBOX))) == S.open


def test_outbound_messages_do_not_decide_when_inbound_ones_do() -> None:
    messages = (
        msg(1, 0, loc(FolderRole.archive)),
        msg(2, 30, loc(FolderRole.sent, "\\Seen"), direction=Direction.outbound),
        msg(3, 40, loc(FolderRole.notes, "\\Seen"), direction=Direction.note),
    )
    assert status(*messages) == S.closed


def test_copies_in_several_folders() -> None:
    # a copy kept in the Archive outweighs the original moved to Trash
    assert status(msg(1, 0, loc(FolderRole.trash), loc(FolderRole.archive))) == S.closed
    # still in INBOX and copied to Pending: open
    assert status(msg(1, 0, loc(INBOX), loc(FolderRole.pending))) == S.open


def test_deleted_flag_and_expunge() -> None:
    # COPY + \\Deleted (a move without MOVE): the copy decides
    assert status(msg(1, 0, loc(INBOX, "\\Deleted"), loc(FolderRole.archive))) == S.closed
    # marked \\Deleted in place
    assert status(msg(1, 0, loc(INBOX, "\\Deleted"))) == S.deleted
    # gone from every folder imapdesk tracks
    assert status(msg(1, 0), msg(2, 5)) == S.deleted
    # one older message expunged, the newest still in INBOX
    assert status(msg(1, 0), msg(2, 5, loc(INBOX))) == S.open
    # an older message expunged, the newest archived
    assert status(msg(1, 0), msg(2, 5, loc(FolderRole.archive))) == S.closed


def test_without_inbound_messages() -> None:
    sent = msg(1, 0, loc(FolderRole.sent, "\\Seen"), direction=Direction.outbound)
    assert status(sent) is None
    archived = msg(2, 5, loc(FolderRole.archive, "\\Seen"), direction=Direction.outbound)
    assert status(sent, archived) == S.closed
    assert status() is None


def test_claim_assignee_tags_and_seen() -> None:
    state = derive_state(
        [
            msg(1, 0, loc(INBOX, "\\Seen", "$Assigned_bob", "vip", "$Forwarded")),
            msg(2, 10, loc(INBOX, "\\Flagged", "$Assigned_alice", "$label4", "\\Answered")),
            msg(3, 20, loc(FolderRole.sent, "\\Seen"), direction=Direction.outbound),
            msg(4, 30),
        ]
    )
    assert state == DerivedState(
        status=S.open,
        claimed=True,
        assignee_handle="alice",
        assignee_handles=("alice", "bob"),
        tags=frozenset({"vip", "To Do"}),
        seen={1: True, 2: False, 3: True},
        unread=True,
    )
    assert state.wanted() == WantedState(True, "alice", frozenset({"vip", "To Do"}))


def test_not_claimed_means_no_assignee() -> None:
    # unflagged in a client that cannot remove keywords: the keyword is stale
    state = derive_state([msg(1, 0, loc(INBOX, "\\Seen", "$Assigned_bob"))])
    assert not state.claimed
    assert state.assignee_handle is None
    assert state.assignee_handles == ("bob",)
    assert not state.unread


def test_flagged_by_a_client_without_assignee() -> None:
    state = derive_state([msg(1, 0, loc(INBOX, "\\Flagged"))])
    assert state.claimed and state.assignee_handle is None


def test_a_flag_in_sent_claims_only_a_conversation_that_lives_in_sent() -> None:
    sent = FolderRole.sent
    ours = Direction.outbound
    # our reply in Sent keeps the flag of a claim that a colleague removed in INBOX
    unflagged = derive_state(
        [msg(1, 0, loc(INBOX)), msg(2, 5, loc(sent, "\\Flagged"), direction=ours)]
    )
    assert not unflagged.claimed
    # a conversation that is only our outbound mail in Sent
    assert derive_state([msg(2, 5, loc(sent, "\\Flagged"), direction=ours)]).claimed
    # our own reply flagged where colleagues work (a copy in INBOX) claims
    assert derive_state(
        [msg(1, 0, loc(INBOX)), msg(2, 5, loc(INBOX, "\\Flagged"), direction=ours)]
    ).claimed


def test_deleted_locations_do_not_claim_or_tag() -> None:
    state = derive_state([msg(1, 0, loc(INBOX, "\\Deleted", "\\Flagged", "vip", "\\Seen"))])
    assert not state.claimed
    assert state.tags == frozenset()
    assert state.seen == {1: True}


def test_seen_on_any_copy() -> None:
    state = derive_state([msg(1, 0, loc(INBOX), loc(FolderRole.archive, "\\Seen"))])
    assert state.seen == {1: True}
    assert not state.unread


def test_naive_and_aware_dates_compare() -> None:
    naive = MessageFacts(
        key=1,
        direction=Direction.inbound,
        date=datetime(2024, 5, 1, 10, 0),
        locations=(loc(FolderRole.pending),),
    )
    aware = msg(2, 0, loc(FolderRole.archive))  # 09:00 UTC, older
    assert status(naive, aware) == S.pending
