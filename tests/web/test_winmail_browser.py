"""winmail.dat in Chromium, on both databases, with mail taken in by the worker from the real
Dovecot: the PDF inside downloads under its own name and type, and the screenshots of an
Outlook mail show where its text refers to them, and below it, without opening the formatted
version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from sqlmodel import Session, select

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.models import Conversation
from imapdesk.kernel.settings import Settings
from tests.support.browser import LiveServer, signed_in_context
from tests.support.winmail import INLINE_CIDS, PDF_NAME, PDF_SIZE, tnef_sample, winmail_mail
from tests.support.worker import add_test_mailbox, caught_up, make_settings, running_worker
from tests.support.worker import wait_for as wait_until

pytestmark = pytest.mark.browser

SCREENSHOT_TEXT = f"The error looks like this:\n[cid:{INLINE_CIDS[1]}]\nIt happens every morning."


def conversation_id(engine: Engine, subject: str) -> int:
    with Session(engine) as s:
        found = s.exec(select(Conversation.id).where(Conversation.subject == subject)).one()
        assert found is not None
        return found


def test_the_pdf_downloads_and_the_screenshots_show_in_the_text(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    db_url: str,
    mail_account: MailAccount,
    tmp_path: Path,
) -> None:
    mail_account.server.seed(
        mail_account.user,
        mail_account.password,
        "INBOX",
        [
            winmail_mail(
                tnef_sample("MAPI_ATTACH_DATA_OBJ.tnef"),
                msgid="contract@nordvik.example",
                to=mail_account.user,
            ),
            winmail_mail(
                tnef_sample("unicode-mapi-attr-name.tnef"),
                msgid="screenshot@nordvik.example",
                subject="Console error",
                text=SCREENSHOT_TEXT,
                to=mail_account.user,
            ),
        ],
    )
    worker_settings = make_settings(db_url, settings.data_dir)
    mailbox_id = add_test_mailbox(engine, worker_settings, mail_account)
    with running_worker(worker_settings, engine):
        wait_until(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")
    context = signed_in_context(new_context, live_server, settings, engine, agents["alice"])
    page = context.new_page()

    page.goto(f"{live_server.url}/conversations/{conversation_id(engine, 'Contract for review')}")
    link = page.locator("ul.attachments a", has_text=PDF_NAME)
    expect(link).to_be_visible()
    expect(page.locator("ul.attachments li", has_text=PDF_NAME)).to_contain_text("application/pdf")
    expect(page.locator("ul.attachments li", has_text=PDF_NAME)).to_contain_text(
        "unpacked from winmail.dat"
    )
    expect(page.locator("ul.attachments a", has_text="winmail.dat")).to_be_visible()
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == PDF_NAME
    saved = tmp_path / "downloaded.pdf"
    download.save_as(saved)
    data = saved.read_bytes()
    assert len(data) == PDF_SIZE and data.startswith(b"%PDF-")
    response = context.request.get(str(link.get_attribute("href")))
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'attachment; filename="{PDF_NAME}"'

    page.goto(f"{live_server.url}/conversations/{conversation_id(engine, 'Console error')}")
    body = page.locator("article.message .body").first
    placed = body.locator("img.inline-image")
    expect(placed).to_have_count(1)
    expect(placed).to_be_visible()
    expect(placed).to_have_attribute("alt", "image002.png")
    # in its place: after the words before the placeholder, before those after it
    order = body.evaluate(
        "el => Array.from(el.childNodes).map(n => n.nodeName === 'IMG' ? 'IMG' : n.textContent)"
    )
    assert order[0].startswith("The error looks like this:")
    assert order[1] == "IMG"
    assert "It happens every morning." in order[2]
    assert "[cid:" not in body.inner_text()
    # the two the text does not mention, below it
    below = page.locator("article.message .inline-images img.inline-image")
    expect(below).to_have_count(2)
    for image in [placed, below.nth(0), below.nth(1)]:
        expect(image).to_be_visible()
        image.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
    # all of it without opening the formatted version (Outlook's HTML, shown there too)
    formatted = page.locator("article.message details.formatted")
    expect(formatted).to_have_count(1)
    assert formatted.evaluate("d => d.open") is False
