"""The rich-text composer in Chromium, with a running worker, the real Dovecot and aiosmtpd, on
SQLite and PostgreSQL (issue 13, item 5): a pasted image arrives at the customer (read from
their Dovecot box with imaplib) as an inline part that the HTML shows by `cid:`, beside a
text/plain alternative, and the agent's signature once; a saved reply's variables filled in,
previewed and inserted, and one with an unknown variable refused beside the composer;
reply-all copies none of our shared addresses; a forward leaves the status as it was; a new
conversation from the UI is delivered."""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import ssl
import struct
import zlib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from imapdesk.devtools.mailserver import LocalMailServer, MailAccount
from imapdesk.devtools.smtp_relay import LocalSmtpRelay
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Agent, Draft, OutboundMail, OutboundState, SavedReply
from imapdesk.kernel.settings import Settings
from tests.support.browser import LiveServer, signed_in_context
from tests.support.mail import customer_mail
from tests.support.outbound import add_sending_mailbox, conversation_of, status_of
from tests.support.worker import make_settings, running_worker, wait_for

pytestmark = pytest.mark.browser


def _png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny, red) PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "data", sender_poll_seconds=0.1)


@pytest.fixture
def customer(mailserver: LocalMailServer) -> MailAccount:
    return mailserver.create_account(prefix="customer")


@pytest.fixture
def info(mailserver: LocalMailServer) -> MailAccount:
    """A second shared box of ours (info@), which a reply-all must never copy."""
    return mailserver.create_account(prefix="info")


@pytest.fixture
def relay(mailserver: LocalMailServer, customer: MailAccount) -> Iterator[LocalSmtpRelay]:
    """A relay that delivers mail to unknown addresses (a partner, a colleague) to the
    customer's box, and to our own boxes where addressed to them."""
    server = LocalSmtpRelay(mailserver, security="starttls", catch_all=customer.user)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def desk(
    engine: Engine,
    settings: Settings,
    mailserver: LocalMailServer,
    mail_account: MailAccount,
    customer: MailAccount,
    info: MailAccount,
    relay: LocalSmtpRelay,
    agents: dict[str, int],
) -> Iterator[int]:
    """support@ and info@ sending through the relay, the worker running, no undo window,
    Alice's signature, and the customer's conversation (its id): their mail to support@ with
    info@ and a colleague in Cc."""
    add_sending_mailbox(engine, settings, mail_account, relay)
    add_sending_mailbox(engine, settings, info, relay, name="info")
    with unit_of_work(engine) as db:
        db.execute(
            update(Agent)
            .where(col(Agent.id) == agents["alice"])
            .values(undo_send_seconds=0, signature="Alice Agent\nExample Support")
        )
    msgid, raw = customer_mail(
        customer.user,
        mail_account.user,
        "Where is my parcel?",
        headers={"Cc": f"Info <{info.user}>, Carla Colleague <carla@colleague.test>"},
    )
    mailserver.deliver(mail_account.user, raw)
    with running_worker(settings, engine):
        yield wait_for(lambda: conversation_of(engine, msgid), what="the conversation")


def _page(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agent_id: int,
    path: str,
) -> Any:
    context = signed_in_context(new_context, live_server, settings, engine, agent_id)
    page = context.new_page()
    page.goto(f"{live_server.url}{path}")
    return page


def _outgoing(engine: Engine) -> list[OutboundMail]:
    with Session(engine) as db:
        return list(db.exec(select(OutboundMail).order_by(col(OutboundMail.id))))


def _sent(engine: Engine, count: int = 1) -> list[OutboundMail]:
    def done() -> list[OutboundMail] | None:
        rows = _outgoing(engine)
        ok = len(rows) == count and all(r.state == OutboundState.sent for r in rows)
        return rows if ok else None

    return wait_for(done, what=f"{count} message(s) sent")


def _imap_messages(account: MailAccount) -> list[EmailMessage]:
    """The customer's INBOX as their mail client reads it: imaplib, over TLS."""
    context = ssl.create_default_context(cafile=str(account.ca_file))
    client = imaplib.IMAP4_SSL(account.host, account.imaps_port, ssl_context=context)
    try:
        client.login(account.user, account.password)
        client.select("INBOX", readonly=True)
        _, data = client.uid("SEARCH", "ALL")  # type: ignore[arg-type]
        out = []
        for uid in data[0].split():
            _, parts = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")  # type: ignore[arg-type]
            raw = parts[0][1]  # type: ignore[index]
            message = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[arg-type]
            assert isinstance(message, EmailMessage)
            out.append(message)
        return out
    finally:
        client.logout()


def _arrived(account: MailAccount, msgid: str) -> EmailMessage:
    def find() -> EmailMessage | None:
        found = [m for m in _imap_messages(account) if m["Message-ID"] == f"<{msgid}>"]
        return found[0] if found else None

    return wait_for(find, what=f"<{msgid}> in {account.user}'s INBOX")


_PASTE = """([selector, b64, kind]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const file = new File([bytes], "screenshot.png", { type: "image/png" });
  const data = new DataTransfer();
  data.items.add(file);
  const target = document.querySelector(selector);
  const event = kind === "paste"
    ? new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true })
    : new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true });
  target.dispatchEvent(event);
}"""


def _put_image(page: Any, selector: str, kind: str = "paste") -> None:
    page.evaluate(_PASTE, [selector, base64.b64encode(PNG).decode(), kind])


def test_a_pasted_image_arrives_as_an_inline_cid_part_with_a_text_alternative(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    customer: MailAccount,
    desk: int,
) -> None:
    page = _page(
        live_server, new_context, engine, settings, agents["alice"], f"/conversations/{desk}"
    )
    page.click("[data-compose=reply]")
    page.fill("textarea[name=body]", "Here is where your parcel is:")
    # pasted into the plain text area: the editor takes over, with the text, and shows it
    _put_image(page, "#composer-form textarea[name=body]")
    editor = page.locator("#composer-form [data-rich-root]")
    expect(editor.locator("img[src*='/compose/images/']")).to_have_count(1)
    expect(editor).to_contain_text("Here is where your parcel is:")
    expect(page.locator("#composer-form textarea[name=body]")).to_be_hidden()
    page.click("[data-send]")
    expect(page.locator("#composer-form")).to_be_hidden()

    (row,) = _sent(engine)
    message = _arrived(customer, row.msgid)
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain"
    text = plain.get_content()
    assert "Here is where your parcel is:" in text
    assert text.count("Alice Agent") == 1  # the signature the editor showed, not twice
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert image.get_content_type() == "image/png"
    assert image.get_content_disposition() == "inline"
    assert image.get_payload(decode=True) == PNG
    cid = image["Content-ID"].strip("<>")
    html = html_part.get_content()
    assert f'src="cid:{cid}"' in html
    assert "/compose/images/" not in html
    assert "Here is where your parcel is:" in html


def test_saved_reply_variables_are_previewed_and_an_unknown_one_is_refused(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    desk: int,
) -> None:
    with unit_of_work(engine) as db:
        db.add(
            SavedReply(
                name="Greeting",
                body="Hi {{ customer.first_name }}, {{ agent.name }} of {{ mailbox.name }} "
                "here about #{{ conversation.number }}.",
            )
        )
        # written before the check (or straight into the database)
        db.add(SavedReply(name="Broken", body="Dear {{ customer.nickname }}"))
    page = _page(
        live_server, new_context, engine, settings, agents["alice"], f"/conversations/{desk}"
    )
    page.click("[data-compose=reply]")
    form = page.locator("#composer-form")
    form.locator("[data-saved-reply]").select_option(label="Greeting")
    preview = form.locator("[data-saved-preview]")
    expected = f"Hi Zoë, Alice Agent of support here about #{desk}."
    expect(preview).to_contain_text(expected)
    preview.get_by_role("button", name="Insert").click()
    expect(preview).to_be_hidden()
    expect(form.locator("textarea[name=body]")).to_have_value(expected)

    form.locator("[data-saved-reply]").select_option(label="Broken")
    error = page.locator("#composer-error")
    expect(error).to_contain_text("unknown variable {{ customer.nickname }}")
    expect(error).to_be_in_viewport()
    expect(form.locator("textarea[name=body]")).to_have_value(expected)

    # saving one with an unknown variable is refused, naming it
    saved = page.context.new_page()
    saved.goto(f"{live_server.url}/saved-replies")
    last = saved.locator("form.saved-reply-form").last
    last.locator("input[name=name]").fill("Typo")
    last.locator("textarea[name=body]").fill("Hello {{ custmer.name }}")
    last.get_by_role("button", name="Add").click()
    expect(saved.locator("body")).to_contain_text("unknown variable {{ custmer }}")
    with Session(engine) as db:
        assert db.exec(select(SavedReply).where(col(SavedReply.name) == "Typo")).first() is None


def test_reply_all_copies_none_of_our_shared_addresses(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    mail_account: MailAccount,
    customer: MailAccount,
    info: MailAccount,
    relay: LocalSmtpRelay,
    desk: int,
) -> None:
    page = _page(
        live_server, new_context, engine, settings, agents["alice"], f"/conversations/{desk}"
    )
    page.click("[data-compose=reply_all]")
    page.fill("textarea[name=body]", "Copying everyone who should know.")
    page.click("[data-send]")
    expect(page.locator("#composer-form")).to_be_hidden()
    (row,) = _sent(engine)
    assert sorted(row.recipients) == sorted([customer.user, "carla@colleague.test"])
    accepted = [a for a in relay.accepted if f"<{row.msgid}>".encode() in a.data]
    assert len(accepted) == 1
    assert sorted(accepted[0].rcpt_tos) == sorted([customer.user, "carla@colleague.test"])
    headers = email.message_from_bytes(accepted[0].data, policy=email.policy.default)
    written = f"{headers['To']} {headers['Cc']}".lower()
    assert info.user.lower() not in written and mail_account.user.lower() not in written


def test_a_forward_leaves_the_status_as_it_was(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    customer: MailAccount,
    desk: int,
) -> None:
    before = status_of(engine, desk)
    page = _page(
        live_server, new_context, engine, settings, agents["alice"], f"/conversations/{desk}"
    )
    page.click("[data-compose=forward]")
    page.fill("input[name=to]", "Warehouse <warehouse@partner.test>")
    page.fill("textarea[name=body]", "Could you check this parcel?")
    page.click("[data-send]")
    expect(page.locator("#composer-form")).to_be_hidden()
    (row,) = _sent(engine)
    assert row.kind == "forward"
    _arrived(customer, row.msgid)  # the relay's catch-all: the partner's copy
    # after_sent has run (the state is sent): the status is what it was
    assert status_of(engine, desk) == before


def test_a_new_conversation_from_the_ui_is_delivered_with_a_dropped_image(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    customer: MailAccount,
    desk: int,
) -> None:
    page = _page(live_server, new_context, engine, settings, agents["alice"], "/")
    page.get_by_role("link", name="New conversation").click()
    form = page.locator("#new-conversation-form")
    form.locator("select[name=mailbox]").select_option("support")
    form.locator("input[name=to]").fill(f"Zoë Müller <{customer.user}>")
    form.locator("input[name=subject]").fill("Your replacement order")
    form.locator("textarea[name=body]").fill("We sent a replacement today.")
    _put_image(page, "#new-conversation-form textarea[name=body]", kind="drop")
    expect(form.locator("[data-rich-root] img[src*='/compose/images/']")).to_have_count(1)
    form.get_by_role("button", name="Send").click()
    expect(page.locator("#conversation")).to_be_visible()
    (row,) = _sent(engine)
    assert row.kind == "new"
    message = _arrived(customer, row.msgid)
    assert str(message["Subject"]).startswith("Your replacement order [#")
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None and "We sent a replacement today." in plain.get_content()
    images = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0].get_payload(decode=True) == PNG
    assert page.url.endswith(f"/conversations/{row.conversation_id}")


def test_an_error_on_the_new_conversation_page_shows_beside_the_form(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    desk: int,
) -> None:
    page = _page(live_server, new_context, engine, settings, agents["alice"], "/new-conversation")
    form = page.locator("#new-conversation-form")
    form.locator("input[name=to]").fill("not an address")
    form.locator("input[name=subject]").fill("Hello")
    form.locator("textarea[name=body]").fill("Text")
    form.get_by_role("button", name="Send").click()
    error = page.locator("#composer-error")
    expect(error).to_contain_text("not an address")
    expect(error).to_be_in_viewport()
    assert _outgoing(engine) == []


def test_a_rich_draft_comes_back_formatted_after_a_reload(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    desk: int,
) -> None:
    path = f"/conversations/{desk}"
    page = _page(live_server, new_context, engine, settings, agents["alice"], path)
    page.click("[data-compose=reply]")
    page.get_by_role("button", name="Formatting").click()
    editor = page.locator("#composer-form [data-rich-root]")
    expect(editor).to_contain_text("Alice Agent")  # the signature, below the cursor
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("Important")
    expect(page.locator("[data-draft-status]")).to_have_text("Draft saved")
    with Session(engine) as db:
        (draft,) = db.exec(select(Draft)).all()
        assert draft.html is not None and "<b>Important</b>" in draft.html
    page.reload()
    editor = page.locator("#composer-form [data-rich-root]")
    expect(editor.locator("b")).to_have_text("Important")
    expect(page.locator("#composer-form textarea[name=body]")).to_be_hidden()


def _agent(engine: Engine, agent_id: int, **values: Any) -> None:
    with unit_of_work(engine) as db:
        db.execute(update(Agent).where(col(Agent.id) == agent_id).values(**values))


def test_the_composer_opens_rich_and_bold_text_arrives_as_html_with_a_plain_alternative(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    relay: LocalSmtpRelay,
    desk: int,
) -> None:
    _agent(engine, agents["alice"], composer_plain_text=False)  # the default
    page = _page(
        live_server, new_context, engine, settings, agents["alice"], f"/conversations/{desk}"
    )
    page.click("[data-compose=reply]")
    editor = page.locator("#composer-form [data-rich-root]")
    expect(editor).to_be_visible()
    expect(editor).to_contain_text("Alice Agent")  # the signature, below the cursor
    expect(page.locator("#composer-form textarea[name=body]")).to_be_hidden()
    expect(page.locator("#composer-form [data-rich-toolbar]")).to_be_visible()
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("Your parcel left today")
    page.click("[data-send]")
    expect(page.locator("#composer-form")).to_be_hidden()

    (row,) = _sent(engine)
    accepted = [a for a in relay.accepted if f"<{row.msgid}>".encode() in a.data]
    assert len(accepted) == 1
    message = email.message_from_bytes(accepted[0].data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "Your parcel left today" in text and "<b>" not in text
    assert text.count("Alice Agent") == 1
    assert "<b>Your parcel left today</b>" in html.get_content()


def test_undo_puts_the_formatted_reply_and_its_image_back_in_the_editor(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    relay: LocalSmtpRelay,
    desk: int,
) -> None:
    _agent(engine, agents["alice"], composer_plain_text=False, undo_send_seconds=60)
    path = f"/conversations/{desk}"
    page = _page(live_server, new_context, engine, settings, agents["alice"], path)
    page.click("[data-compose=reply]")
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("Keep this")
    _put_image(page, "#composer-form [data-rich-root]")
    editor = page.locator("#composer-form [data-rich-root]")
    expect(editor.locator("img[src*='/compose/images/']")).to_have_count(1)
    page.click("[data-send]")
    expect(page.locator("#composer-form")).to_be_hidden()
    undo = page.locator("#send-toast [data-undo-send]")
    expect(undo).to_be_visible()
    undo.click()
    expect(page.locator("#send-toast")).to_contain_text("Taken back")

    expect(page.locator("#composer-form")).to_be_visible()
    expect(editor.locator("b")).to_have_text("Keep this")
    image = editor.locator("img[src*='/compose/images/']")
    expect(image).to_have_count(1)
    wait_for(
        lambda: image.evaluate("i => i.complete && i.naturalWidth === 3"),
        what="the pasted image shown again",
    )
    expect(page.locator("#composer-form textarea[name=body]")).to_be_hidden()
    assert _outgoing(engine) == []
    assert not [a for a in relay.accepted if b"Keep this" in a.data]
    # and it is the draft again: a reload brings it back formatted
    with Session(engine) as db:
        (draft,) = db.exec(select(Draft)).all()
        assert draft.html is not None and "<b>Keep this" in draft.html
        assert "/compose/images/" in draft.html
    page.reload()
    expect(page.locator("#composer-form [data-rich-root] b")).to_have_text("Keep this")


def test_an_agent_who_chose_plain_text_gets_the_text_area(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    desk: int,
) -> None:
    _agent(engine, agents["alice"], composer_plain_text=False)
    page = _page(live_server, new_context, engine, settings, agents["alice"], "/account")
    form = page.locator("#account-form")
    expect(form.get_by_role("radio", name="Rich text")).to_be_checked()
    form.get_by_role("radio", name="Plain text").check()
    form.get_by_role("button", name="Save").click()
    expect(page.locator("body")).to_contain_text("Your account is saved.")
    with Session(engine) as db:
        alice = db.get(Agent, agents["alice"])
        assert alice is not None and alice.composer_plain_text is True

    page.goto(f"{live_server.url}/conversations/{desk}")
    page.click("[data-compose=reply]")
    area = page.locator("#composer-form textarea[name=body]")
    expect(area).to_be_visible()
    expect(area).to_be_focused()
    expect(page.locator("#composer-form [data-rich-root]")).to_be_hidden()
    toggle = page.get_by_role("button", name="Formatting")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    # "Formatting" still turns the editor on, for this message
    area.fill("Typed plainly")
    toggle.click()
    expect(page.locator("#composer-form [data-rich-root]")).to_contain_text("Typed plainly")
    expect(toggle).to_have_attribute("aria-pressed", "true")


def test_a_refused_new_conversation_comes_back_formatted_in_the_editor(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    desk: int,
) -> None:
    _agent(engine, agents["alice"], composer_plain_text=False)
    page = _page(live_server, new_context, engine, settings, agents["alice"], "/new-conversation")
    form = page.locator("#new-conversation-form")
    editor = form.locator("[data-rich-root]")
    expect(editor).to_be_visible()
    expect(form.locator("textarea[name=body]")).to_be_hidden()
    form.locator("input[name=to]").fill("not an address")
    form.locator("input[name=subject]").fill("Hello")
    editor.click()
    page.keyboard.press("Control+Home")
    form.get_by_role("button", name="Bold").click()
    page.keyboard.type("Dear customer")
    form.get_by_role("button", name="Send").click()
    expect(page.locator("#composer-error")).to_contain_text("not an address")
    expect(form.locator("[data-rich-root] b")).to_have_text("Dear customer")
    assert _outgoing(engine) == []
