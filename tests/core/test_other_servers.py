"""Cyrus IMAP and Courier-IMAP from Debian's packages (tests/support/other_servers.py): what a
client meets there, and what imapdesk's probe makes of it.

Both keep every folder under the personal namespace's `INBOX.` with `.` between levels and
refuse a folder outside it; Cyrus marks its special-use folders, Courier has no SPECIAL-USE,
MOVE or CONDSTORE. With their defaults both tell an idling client about new mail only when
they poll (every 60 s): the delay seen is recorded (`idle_push_seconds`), not asserted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.domain.mailboxes.capabilities import plain_client_notes
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.mail.imap.probe import probe
from tests.support.mail import message_with_id
from tests.support.other_servers import OtherImapServer

# how long an idling client may wait for news: both servers poll every 60 s
IDLE_NEWS_BOUND = 120.0
# Cyrus lets a client create this many user flags per folder (MAX_USER_FLAGS is 128: the last
# 28 slots are kept for replication and `mailbox_initial_flags`)
CYRUS_CLIENT_KEYWORDS = 100


@pytest.fixture(params=["cyrus", "courier"])
def server(request: pytest.FixtureRequest) -> OtherImapServer:
    found: OtherImapServer = request.getfixturevalue(f"{request.param}_server")
    return found


@pytest.fixture
def account(server: OtherImapServer) -> MailAccount:
    return server.create_account()


@pytest.fixture
def client(account: MailAccount) -> Iterator[IMAPClient]:
    """Logged in over IMAPS, the certificate verified against the server's own CA."""
    imap = account.connect(ssl=True)
    try:
        yield imap
    finally:
        with contextlib.suppress(Exception):
            imap.logout()


def lower(flags: tuple[bytes | str, ...]) -> set[str]:
    return {(f.decode() if isinstance(f, bytes) else f).lower() for f in flags}


def test_login_namespace_and_folders(
    server: OtherImapServer, account: MailAccount, client: IMAPClient
) -> None:
    namespace = client.namespace()
    assert namespace.personal == (("INBOX.", "."),)
    listed = {name: (lower(flags), delim) for flags, delim, name in client.list_folders()}
    assert listed["INBOX"][1] == b"."
    # a folder beside INBOX is refused: mapped folders live under the prefix
    with pytest.raises(IMAPClientError):
        client.create_folder("Pending")
    client.create_folder("INBOX.Pending")
    assert "INBOX.Pending" in {name for _f, _d, name in client.list_folders()}
    assert server.folder("Pending") == "INBOX.Pending"
    if server.kind == "cyrus":
        assert client.has_capability("SPECIAL-USE")
        assert "\\sent" in listed["INBOX.Sent"][0]
        assert "\\junk" in listed["INBOX.Junk"][0]
    else:
        assert not client.has_capability("SPECIAL-USE")
        # the folders a host's webmail makes at the first login, known by their names only
        assert set(listed) == {"INBOX", "INBOX.Drafts", "INBOX.Sent", "INBOX.Trash", "INBOX.Junk"}
        assert all(
            flags <= {"\\haschildren", "\\hasnochildren", "\\unmarked", "\\marked"}
            for flags, _delim in listed.values()
        )
    # STARTTLS on the plain port, and a wrong password refused
    starttls = account.connect(starttls=True)
    assert starttls.namespace().personal == (("INBOX.", "."),)
    starttls.logout()
    with pytest.raises(LoginError):
        server.connect(account.user, account.password + "x", ssl=True)


def test_append_and_keywords(
    server: OtherImapServer, account: MailAccount, client: IMAPClient
) -> None:
    answer = client.append(
        "INBOX", message_with_id("k1@example.com", subject="Keywords"), ["\\Seen"]
    )
    assert b"APPENDUID" in answer
    selected = client.select_folder("INBOX")
    assert b"\\*" in selected[b"PERMANENTFLAGS"]
    (uid,) = client.search(["HEADER", "Message-ID", "<k1@example.com>"])
    client.add_flags([uid], ["$Assigned_alice", "$Tag_billing"], silent=True)
    assert {"$assigned_alice", "$tag_billing", "\\seen"} <= lower(client.get_flags([uid])[uid])
    client.remove_flags([uid], ["$Tag_billing"], silent=True)
    assert "$tag_billing" not in lower(client.get_flags([uid])[uid])
    # the seed helper: a folder named as on every server, created under the prefix if missing
    seeded = server.seed(
        account.user,
        account.password,
        "Sent",
        [message_with_id("k2@example.com", subject="Re: Keywords")],
        flags=["\\Seen", "$Note"],
    )
    assert seeded == 1
    client.select_folder("INBOX.Sent", readonly=True)
    (sent,) = client.search("ALL")
    assert {"\\seen", "$note"} <= lower(client.get_flags([sent])[sent])
    # delivered as by an MTA: in INBOX, unseen, seen by the next command of a session
    client.select_folder("INBOX")
    server.deliver(account.user, message_with_id("k3@example.com", subject="Delivered"))
    client.noop()
    (delivered,) = client.search(["HEADER", "Message-ID", "<k3@example.com>"])
    assert "\\seen" not in lower(client.get_flags([delivered])[delivered])


def test_idle_reports_news_when_the_server_polls(
    server: OtherImapServer,
    account: MailAccount,
    client: IMAPClient,
    record_property: Callable[[str, object], None],
) -> None:
    other = account.connect(ssl=True)
    client.select_folder("INBOX")
    client.idle()
    try:
        sent = time.monotonic()
        other.append("INBOX", message_with_id("idle1@example.com", subject="While idling"))
        delay = None
        while delay is None and time.monotonic() - sent < IDLE_NEWS_BOUND:
            news = client.idle_check(timeout=1)
            if any(len(item) > 1 and item[1] == b"EXISTS" for item in news):
                delay = time.monotonic() - sent
    finally:
        client.idle_done()
        other.logout()
    assert delay is not None, f"{server.kind} sent no EXISTS within {IDLE_NEWS_BOUND} s"
    record_property("idle_push_seconds", round(delay, 2))
    print(f"{server.kind}: IDLE reported the APPEND after {delay:.2f} s")


def test_cyrus_refuses_keywords_past_its_client_limit(cyrus_account: MailAccount) -> None:
    """What a server that refuses a keyword says: Cyrus at the 101st keyword of a folder
    refuses the STORE (and an APPEND carrying one) with NO, while PERMANENTFLAGS still
    promises `\\*`; keywords it knows stay usable, and the limit is per folder."""
    client = cyrus_account.connect(ssl=True)
    try:
        for i in (1, 2):
            client.append("INBOX", message_with_id(f"kw{i}@example.com", subject=f"kw {i}"))
        client.select_folder("INBOX")
        first, second = client.search("ALL")
        keywords = [f"kw{i}" for i in range(1, CYRUS_CLIENT_KEYWORDS + 1)]
        for start in range(0, len(keywords), 20):
            client.add_flags([first], keywords[start : start + 20], silent=True)
        assert lower(client.get_flags([first])[first]) - {"\\recent"} == set(keywords)
        with pytest.raises(IMAPClientError, match="Too many user flags in mailbox"):
            client.add_flags([second], ["kw101"], silent=True)
        with pytest.raises(IMAPClientError, match="Too many user flags in mailbox"):
            client.append("INBOX", message_with_id("kw4@example.com", subject="x"), ["kw102"])
        assert b"\\*" in client.select_folder("INBOX")[b"PERMANENTFLAGS"]
        client.add_flags([second], ["kw5"], silent=True)
        assert lower(client.get_flags([second])[second]) - {"\\recent"} == {"kw5"}
        # a slot stays taken after the keyword is gone from every message
        client.remove_flags([first, second], ["kw7"], silent=True)
        with pytest.raises(IMAPClientError, match="Too many user flags in mailbox"):
            client.add_flags([second], ["kw103"], silent=True)
        # another folder has slots of its own
        client.select_folder("INBOX.Archive")
        client.append("INBOX.Archive", message_with_id("kw3@example.com", subject="kw 3"))
        (archived,) = client.search("ALL")
        client.add_flags([archived], ["kw101"], silent=True)
        assert "kw101" in lower(client.get_flags([archived])[archived])
    finally:
        client.logout()


def test_probe_reports_what_the_server_offers(
    server: OtherImapServer, account: MailAccount
) -> None:
    imap = ImapSession(
        ImapAccount(
            host="localhost",
            port=server.imaps_port,
            security="ssl",
            username=account.user,
            password=account.password,
            ca_file=str(server.ca_file),
            label=server.kind,
        )
    )
    try:
        caps = probe(imap)
    finally:
        imap.close()
    assert caps["idle"] is True
    assert caps["uidplus"] is True
    assert caps["keywords"] is True
    assert "\\*" in caps["permanent_flags"]  # type: ignore[operator]
    notes = plain_client_notes(caps)
    if server.kind == "cyrus":
        assert str(caps["server"]).startswith("cyrus")
        assert caps["condstore"] is True and caps["qresync"] is True
        assert caps["move"] is True and caps["special_use"] is True
        assert caps["keyword_limit"] == CYRUS_CLIENT_KEYWORDS
        assert any(f"at most {CYRUS_CLIENT_KEYWORDS} distinct keywords" in n for n in notes)
    else:
        assert caps["server"] == "courier-imap"
        assert caps["condstore"] is False and caps["qresync"] is False
        assert caps["move"] is False and caps["special_use"] is False
        assert caps["keyword_limit"] == "unlimited"
        assert any("no CONDSTORE" in n for n in notes)
        assert any("no MOVE" in n for n in notes)
