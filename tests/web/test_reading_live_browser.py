"""Reading as in any mail client, end to end: a real Dovecot, a running worker, a colleague on a
plain IMAP client (IMAPClient) and headless Chromium, on SQLite and PostgreSQL.

- `\\Seen` set (and taken off) in the colleague's client changes an open conversation page and
  an open list without a reload;
- opening a conversation marks it read, and the colleague's client then shows `\\Seen`; with
  the mailbox's setting off, opening leaves it unread and writes nothing to the mailbox;
- a conversation flagged in the colleague's client leaves Unassigned on an open list, shows as
  claimed everywhere, and `c` on it says who holds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from imapclient import IMAPClient
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Conversation, Mailbox, PendingImapAction, utcnow
from imapdesk.kernel.settings import Settings
from tests.support.browser import LiveServer, signed_in_context
from tests.support.mail import make_mail
from tests.support.worker import add_test_mailbox, caught_up, make_settings, running_worker
from tests.support.worker import wait_for as wait_until

pytestmark = pytest.mark.browser

SEEN, FLAGGED = b"\\Seen", b"\\Flagged"


@dataclass
class Scene:
    conversation_id: int
    page: Callable[[str], Any]  # a signed-in page for "alice" or "bob"
    url: str


@pytest.fixture
def start(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    db_url: str,
    settings: Settings,
    agents: dict[str, int],
    mail_account: MailAccount,
) -> Iterator[Callable[[bool], Scene]]:
    """`start(reads_on_open)`: one customer mail, unseen in INBOX, taken in by a worker that
    runs until the test ends; the mailbox marks conversations read on opening, or not."""
    with ExitStack() as stack:

        def begin(reads_on_open: bool) -> Scene:
            worker_settings = make_settings(db_url, settings.data_dir)
            account = mail_account
            account.server.seed(account.user, account.password, "INBOX", [make_mail(1)])
            mailbox_id = add_test_mailbox(engine, worker_settings, account)
            with unit_of_work(engine) as s:
                box = s.get(Mailbox, mailbox_id)
                assert box is not None
                box.mark_read_on_open = reads_on_open
            stack.enter_context(running_worker(worker_settings, engine))
            wait_until(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")

            def conversation() -> int | None:
                with Session(engine) as s:
                    return s.exec(select(Conversation.id)).first()

            cid = wait_until(conversation, what="the conversation")
            with unit_of_work(engine) as s:
                # taken in an hour ago: the live updates see only what moves `updated_at`
                found = s.get(Conversation, cid)
                assert found is not None
                found.updated_at = utcnow() - timedelta(hours=1)

            def page(name: str) -> Any:
                context = signed_in_context(
                    new_context, live_server, settings, engine, agents[name]
                )
                return context.new_page()

            return Scene(cid, page, live_server.url)

        yield begin


def opened(page: Any, url: str) -> Any:
    """The page, live, with a marker that a reload would lose."""
    page.goto(url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected")
    page.evaluate("window.readingMarker = 'still here'")
    return page


def not_reloaded(*pages: Any) -> None:
    for page in pages:
        assert page.evaluate("window.readingMarker") == "still here"


def inbox_flags(colleague: IMAPClient) -> set[bytes]:
    """The flags of the customer's mail, as the colleague's client sees them now."""
    colleague.select_folder("INBOX", readonly=True)
    [(_, data)] = colleague.fetch(colleague.search("ALL"), ["FLAGS"]).items()
    return set(data[b"FLAGS"])


def colleague_sets(colleague: IMAPClient, flag: bytes, on: bool = True) -> None:
    colleague.select_folder("INBOX")
    uids = colleague.search("ALL")
    if on:
        colleague.add_flags(uids, [flag])
    else:
        colleague.remove_flags(uids, [flag])
    colleague.unselect_folder()


def row(page: Any, cid: int) -> Any:
    return page.locator(f'#queue-rows tr[data-id="{cid}"]')


UNREAD = re.compile(r"\bunread\b")


def test_seen_from_a_plain_client_changes_the_open_page_and_list(
    start: Callable[[bool], Scene], colleague: IMAPClient, engine: Engine
) -> None:
    # opening leaves it unread here: only the colleague's client changes it
    scene = start(False)
    cid = scene.conversation_id
    alice = opened(scene.page("alice"), f"{scene.url}/?queue=open")
    expect(row(alice, cid)).to_have_class(UNREAD)
    bob = opened(scene.page("bob"), f"{scene.url}/conversations/{cid}")
    badge = bob.locator("#conv-state .unread-badge")
    expect(badge).to_have_text("unread")  # opening it read nothing: the mailbox says so

    colleague_sets(colleague, SEEN)
    expect(badge).to_have_count(0)
    expect(bob.locator("#conv-state form[data-action=unread] button")).to_have_text("Mark unread")
    expect(row(alice, cid)).not_to_have_class(UNREAD)

    colleague_sets(colleague, SEEN, on=False)
    expect(badge).to_have_text("unread")
    expect(row(alice, cid)).to_have_class(UNREAD)
    not_reloaded(alice, bob)
    # and nothing of ours went to the mailbox: opening wrote no \Seen
    with Session(engine) as s:
        written = s.exec(
            select(PendingImapAction).where(col(PendingImapAction.conversation_id) == cid)
        ).all()
    assert written == []
    assert SEEN not in inbox_flags(colleague)


@pytest.mark.parametrize("reads", [True, False], ids=["reads-on-open", "leaves-unread"])
def test_opening_marks_read_for_the_colleagues_client_too(
    start: Callable[[bool], Scene], colleague: IMAPClient, reads: bool
) -> None:
    scene = start(reads)
    cid = scene.conversation_id
    alice = opened(scene.page("alice"), f"{scene.url}/?queue=open")
    expect(row(alice, cid)).to_have_class(UNREAD)
    bob = opened(scene.page("bob"), f"{scene.url}/conversations/{cid}")
    if not reads:
        expect(bob.locator("#conv-state .unread-badge")).to_be_visible()
        expect(row(alice, cid)).to_have_class(UNREAD)
        assert SEEN not in inbox_flags(colleague)
        return
    expect(bob.locator("#conv-state .unread-badge")).to_have_count(0)
    # the write-back carries it to the mailbox: the colleague's client shows it read
    wait_until(lambda: SEEN in inbox_flags(colleague), what="\\Seen in the colleague's client")
    # and the open list follows
    expect(row(alice, cid)).not_to_have_class(UNREAD)
    not_reloaded(alice)


def test_flagged_in_a_plain_client_leaves_unassigned(
    start: Callable[[bool], Scene], colleague: IMAPClient
) -> None:
    scene = start(True)
    cid = scene.conversation_id
    alice = opened(scene.page("alice"), f"{scene.url}/?queue=unassigned")
    expect(row(alice, cid)).to_have_count(1)
    unassigned = alice.locator('.sidebar a[data-queue="unassigned"] .count')
    expect(unassigned).to_have_text("1")
    bob = opened(scene.page("bob"), f"{scene.url}/conversations/{cid}")
    expect(bob.locator("#conv-holder")).to_have_text("unassigned")

    colleague_sets(colleague, FLAGGED)
    expect(row(alice, cid)).to_have_count(0)
    expect(unassigned).to_have_text("0")
    expect(alice.locator("#queue-empty")).to_be_visible()
    expect(bob.locator("#conv-holder")).to_have_text("claimed by someone via mail client")
    expect(bob.locator("#conv-state form[data-action=claim]")).to_have_count(0)
    not_reloaded(alice, bob)
    bob.keyboard.press("c")
    expect(bob.locator("#flash")).to_have_text(
        "Not claimed: it is already claimed by someone via mail client."
    )
    # every list says who has it
    alice.goto(f"{scene.url}/?queue=open")
    expect(row(alice, cid).locator("[data-claimed-elsewhere]")).to_have_text(
        "· claimed by someone via mail client"
    )
