"""The search box in headless Chromium, on both databases: Chinese and Japanese mail that came
in through the real Dovecot and the worker is found by words from the middle of its sentences,
each result showing the word marked in its text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.settings import Settings
from tests.support.browser import LiveServer, signed_in_context
from tests.support.cjk_mail import CORPUS_JAPANESE, CORPUS_JAPANESE_WORD, MAILS
from tests.support.worker import add_test_mailbox, caught_up, make_settings, running_worker
from tests.support.worker import wait_for as wait_until

pytestmark = pytest.mark.browser


def search(page: Any, words: str) -> Any:
    page.fill("#list-q", words)
    page.press("#list-q", "Enter")
    page.wait_for_url(lambda url: parse_qs(urlsplit(url).query).get("q") == [words])
    return page.locator("#queue-rows tr")


def test_chinese_and_japanese_words_are_found_and_marked(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    db_url: str,
    mail_account: MailAccount,
) -> None:
    raws = [m.raw(to=mail_account.user) for m in MAILS] + [CORPUS_JAPANESE.read_bytes()]
    mail_account.server.seed(mail_account.user, mail_account.password, "INBOX", raws)
    worker_settings = make_settings(db_url, settings.data_dir)
    mailbox_id = add_test_mailbox(engine, worker_settings, mail_account)
    with running_worker(worker_settings, engine):
        wait_until(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")

    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/")
    expect(page.locator("#queue-rows tr")).to_have_count(len(raws))
    for mail in MAILS:
        for word in mail.words:
            rows = search(page, word)
            expect(rows).to_have_count(1)
            expect(rows.first.locator("td.subject a")).to_have_text(mail.subject)
            mark = rows.first.locator(".snippet mark")
            expect(mark).to_have_text(word)
            expect(mark).to_be_visible()
            # the words around it, as the mail has them
            expect(rows.first.locator(".snippet")).to_contain_text(
                mail.body[mail.body.index(word) - 3 : mail.body.index(word) + len(word) + 3]
            )
    rows = search(page, CORPUS_JAPANESE_WORD)
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".snippet mark")).to_have_text(CORPUS_JAPANESE_WORD)
    # a field and a word: the sender's name in Japanese
    rows = search(page, "from:山田 発行")
    expect(rows).to_have_count(1)
    # nothing found: the list says so
    search(page, "登錄")
    expect(page.locator("#queue-empty")).to_be_visible()
