"""The IMAP layer's wire helpers (imapdesk.mail.imap.protocol), without a server: sequence
sets, quoted folder names, and the response codes the write-back reads (COPYUID, MODIFIED,
TRYCREATE) as imaplib files them with a command's untagged responses."""

from __future__ import annotations

from imapdesk.mail.imap import ImapReply
from imapdesk.mail.imap.protocol import (
    expand_set,
    flags_of_fetched,
    quoted_folder,
    search_hits,
    uid_set,
)


def test_uid_sets_are_compact_and_expand_in_written_order() -> None:
    assert uid_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert uid_set([4]) == "4"
    assert expand_set("1:3,5,7:8") == [1, 2, 3, 5, 7, 8]
    # COPYUID pairs its sets position by position, in the order the server wrote them
    assert expand_set("9:7,2") == [9, 8, 7, 2]


def test_folder_names_are_modified_utf7_and_quoted() -> None:
    assert quoted_folder("Archive") == '"Archive"'
    assert quoted_folder("Entwürfe") == '"Entw&APw-rfe"'
    assert quoted_folder('Team "B" \\ old') == '"Team \\"B\\" \\\\ old"'


def test_copyuid_maps_old_uids_to_new_ones() -> None:
    reply = ImapReply(
        'UID MOVE 3:4,7 "Archive"',
        "OK",
        (b"Move completed.",),
        {
            "COPYUID": (b"1700000000 3:4,7 10:12",),
        },
    )
    assert reply.ok and reply.copied == {3: 10, 4: 11, 7: 12}
    # sets of different lengths say nothing reliable
    assert ImapReply("UID COPY", "OK", (), {"COPYUID": (b"1 3:5 10",)}).copied == {}


def test_modified_lists_the_uids_a_conditional_store_left_alone() -> None:
    reply = ImapReply(
        "UID STORE",
        "OK",
        (b"[MODIFIED 7,9:10] Conditional STORE failed",),
        {
            "MODIFIED": (b"7,9:10",),
        },
    )
    assert reply.modified == [7, 9, 10]
    assert ImapReply("UID STORE", "OK", (b"Store completed.",)).modified == []


def test_trycreate_is_told_in_the_codes_or_the_text() -> None:
    said = (b"[TRYCREATE] Mailbox doesn't exist: Pending",)
    assert ImapReply("UID COPY", "NO", said, {"TRYCREATE": (b"",)}).tells("TRYCREATE")
    assert ImapReply("UID COPY", "NO", said).tells("TRYCREATE")
    refused = ImapReply("UID COPY", "NO", (b"Permission denied",))
    assert not refused.tells("TRYCREATE")
    assert refused.said == "Permission denied"


def test_fetch_flags_and_search_hits() -> None:
    lines = [
        b"1 (UID 4 FLAGS (\\Seen $Assigned_alice) MODSEQ (12))",
        b"2 (FLAGS (\\Flagged))",  # an unsolicited update without its UID
        b"3 (UID 9 FLAGS ())",
        b"4 (UID 11 FLAGS (\\Seen))",  # not asked about
    ]
    found = flags_of_fetched(lines, [4, 9])
    assert {uid: (f.flags, f.modseq) for uid, f in found.items()} == {
        4: (("\\Seen", "$Assigned_alice"), 12),
        9: ((), None),
    }
    assert search_hits([b"7 3 9", b"3"]) == [3, 7, 9]
    assert search_hits([b""]) == []
