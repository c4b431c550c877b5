from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from imapclient import IMAPClient

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from tests.support.mapping import writes  # noqa: F401  (a fixture of the mapping tests)


@pytest.fixture
def imap_client() -> Iterator[Callable[[MailAccount], IMAPClient]]:
    """Opens independent IMAP sessions (colleagues on plain clients); logged out afterwards."""
    clients: list[IMAPClient] = []

    def connect(account: MailAccount) -> IMAPClient:
        client = account.connect()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        with contextlib.suppress(Exception):
            client.logout()


@pytest.fixture
def mail_account_factory(mailserver: LocalMailServer) -> Callable[[], MailAccount]:
    return mailserver.create_account
