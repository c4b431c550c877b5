"""Watching what the write-back sends: its sessions, dressed by a test.

The write-back has a connection of its own when it runs alone (as tests drive it), and takes
turns at the mailbox's shared write connection in the worker (worker/connections.py), where
the folders' checks and the sender's copies run too. `dress_writeback_sessions` applies a
test's changes to the write-back's own sessions when they are made, and to the shared one for
each of the write-back's turns only: so what is recorded is the write-back's, whoever else
uses the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

import imapdesk.worker.writeback.loop as writeback_loop
from imapdesk.mail.imap import ImapAccount, ImapSession
from imapdesk.worker.writeback import WriteBack

# changes a session (replacing methods on the instance); returns what undoes them
Dress = Callable[[ImapSession], Callable[[], None]]


def dress_writeback_sessions(monkeypatch: pytest.MonkeyPatch, dress: Dress) -> None:
    class Dressed(ImapSession):
        def __init__(self, account: ImapAccount) -> None:
            super().__init__(account)
            dress(self)  # its own session: dressed for its whole life

    monkeypatch.setattr(writeback_loop, "ImapSession", Dressed)
    original = WriteBack._turn

    @contextmanager
    def turn(self: WriteBack) -> Iterator[ImapSession]:
        with original(self) as imap:
            if self.connections is None:
                yield imap
                return
            undo = dress(imap)
            try:
                yield imap
            finally:
                undo()

    monkeypatch.setattr(WriteBack, "_turn", turn)


def replace_on(session: object, **methods: object) -> Callable[[], None]:
    """Put these attributes on the instance; returns what takes them away again."""
    before = {name: session.__dict__.get(name, _ABSENT) for name in methods}
    for name, value in methods.items():
        setattr(session, name, value)

    def undo() -> None:
        for name, value in before.items():
            if value is _ABSENT:
                delattr(session, name)
            else:
                setattr(session, name, value)

    return undo


_ABSENT = object()
