"""A server tells each change to a selected folder once, with whatever response comes next.

News that rides along with our own UID FETCH must not be lost: `ImapSession.take_news`
collects it, and a NOOP afterwards would not tell it again (the premise is checked too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.mail.imap import ImapAccount, ImapSession
from tests.support.mail import message_with_id as make_mail


@pytest.fixture
def session(mail_account: MailAccount) -> Iterator[ImapSession]:
    mail_account.server.seed(
        mail_account.user,
        mail_account.password,
        "INBOX",
        [make_mail("n1@example.com", subject="One"), make_mail("n2@example.com", subject="Two")],
    )
    imap = ImapSession(
        ImapAccount(
            host=mail_account.host,
            port=mail_account.imap_port,
            security="none",
            username=mail_account.user,
            password=mail_account.password,
        )
    )
    imap.select("INBOX")
    assert imap.take_news() == set(), "a SELECT is the whole state, not news"
    try:
        yield imap
    finally:
        imap.close()


def test_an_arrival_told_with_a_fetch_is_kept(session: ImapSession, colleague: IMAPClient) -> None:
    colleague.append("INBOX", make_mail("n3@example.com", subject="Three"))
    time.sleep(0.05)
    assert list(session.sizes([1])) == [1]  # the UID FETCH's reply carries the EXISTS
    assert session.take_news() == {"EXISTS"}
    assert session.take_news() == set()
    # the premise: asked again, the server has nothing more to say
    _text, said = session.client.noop()
    assert not [r for r in said if isinstance(r, tuple) and r[1:] == (b"EXISTS",)]


def test_a_flag_change_told_with_a_fetch_is_kept(
    session: ImapSession, colleague: IMAPClient
) -> None:
    colleague.select_folder("INBOX")
    colleague.add_flags([2], [b"\\Flagged"])
    time.sleep(0.05)
    # our FETCH of another message's size carries message 2's new flags
    assert list(session.sizes([1])) == [1]
    assert "FETCH" in session.take_news()


def test_an_expunge_told_with_a_fetch_is_kept(session: ImapSession, colleague: IMAPClient) -> None:
    colleague.select_folder("INBOX")
    colleague.delete_messages([2])
    colleague.expunge()
    time.sleep(0.05)
    fetched = session.fetch_messages([1])
    assert [m.uid for m in fetched] == [1]
    assert "EXPUNGE" in session.take_news()
