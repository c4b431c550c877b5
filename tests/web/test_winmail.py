"""winmail.dat through the real ingest (Dovecot and the worker), on both databases: the files
inside are attachments of their own, listed in the REST API with the winmail.dat they came
from and downloaded with their names and types; the original stays; a damaged winmail.dat
is kept as it came with the reason, and mail after it keeps coming in. The customer the mail
is from is made by the same ingest."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.kernel.settings import Settings
from tests.support.mail import make_mail
from tests.support.winmail import PDF_NAME, PDF_SIZE, tnef_sample, winmail_mail
from tests.support.worker import add_test_mailbox, caught_up, make_settings, running_worker
from tests.support.worker import wait_for as wait_until

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


def conversation_with(api: TestClient, subject: str) -> dict[str, Any] | None:
    items = api.get("/api/v1/conversations").json()["items"]
    found = [c for c in items if c["subject"] == subject]
    return api.get(f"/api/v1/conversations/{found[0]['id']}").json() if found else None


def test_winmail_files_come_in_with_names_and_types_and_damage_stops_nothing(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    db_url: str,
    mail_account: MailAccount,
) -> None:
    pdf_tnef = tnef_sample("MAPI_ATTACH_DATA_OBJ.tnef")
    umlaut_tnef = tnef_sample("umlaut.tnef")
    mail_account.server.seed(
        mail_account.user,
        mail_account.password,
        "INBOX",
        [
            winmail_mail(pdf_tnef, msgid="contract@nordvik.example", to=mail_account.user),
            winmail_mail(
                umlaut_tnef,
                msgid="umlaut@nordvik.example",
                subject="Anhang mit Umlaut",
                to=mail_account.user,
            ),
        ],
    )
    worker_settings = make_settings(db_url, settings.data_dir)
    mailbox_id = add_test_mailbox(engine, worker_settings, mail_account)
    with running_worker(worker_settings, engine):
        wait_until(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")
        # while the worker runs: a damaged winmail.dat, then ordinary mail
        client = mail_account.connect()
        damaged = tnef_sample("two-files.tnef")[:2500]
        client.append(
            "INBOX",
            winmail_mail(
                damaged, msgid="damaged@nordvik.example", subject="Cut short", to=mail_account.user
            ),
        )
        client.append("INBOX", make_mail(7, subject="After the damaged one"))
        client.logout()
        wait_until(
            lambda: conversation_with(api, "After the damaged one"), what="the mail after it"
        )

    contract = conversation_with(api, "Contract for review")
    assert contract is not None
    (message,) = contract["messages"]
    attachments = {a["filename"]: a for a in message["attachments"]}
    assert list(attachments) == [
        "winmail.dat",
        "VIA_Nytt_1402.doc",
        PDF_NAME,
        "VIA_Nytt_14021.htm",
    ]
    original = attachments["winmail.dat"]
    assert original["unpacked_from"] is None and original["unpack_error"] is None
    pdf = attachments[PDF_NAME]
    assert (pdf["content_type"], pdf["size"], pdf["unpacked_from"]) == (
        "application/pdf",
        PDF_SIZE,
        original["id"],
    )
    r = api.get(pdf["url"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'attachment; filename="{PDF_NAME}"'
    assert r.content.startswith(b"%PDF-") and len(r.content) == PDF_SIZE
    r = api.get(original["url"])
    assert r.headers["content-type"] == "application/ms-tnef" and r.content == pdf_tnef

    umlaut = conversation_with(api, "Anhang mit Umlaut")
    assert umlaut is not None
    text_file = next(
        a for a in umlaut["messages"][0]["attachments"] if a["content_type"] == "text/plain"
    )
    assert text_file["filename"] == "UmlautAnhang-äüö.txt"
    r = api.get(text_file["url"])
    assert r.status_code == 200
    assert (
        "filename*=utf-8''UmlautAnhang-%C3%A4%C3%BC%C3%B6.txt" in r.headers["content-disposition"]
    )

    cut = conversation_with(api, "Cut short")
    assert cut is not None
    (message,) = cut["messages"]
    assert message["parse_error"] is None
    assert message["text"].startswith("Hello, the contract is attached.")
    files = [(a["filename"], a["size"]) for a in message["attachments"]]
    # the whole first file, the cut second left out, the original as it came
    assert files == [("winmail.dat", 2500), ("AUTHORS", 244)]
    error = message["attachments"][0]["unpack_error"]
    assert "cut short" in error and "README" in error
    assert api.get(message["attachments"][0]["url"]).content == damaged

    # the sender is a customer now, with the organisation of their domain
    found = api.get("/api/v1/customers", params={"q": "ola@nordvik.example"}).json()["items"]
    assert [(c["name"], c["organisation"]) for c in found] == [("Ola Nordmann", "nordvik.example")]
    assert found[0]["conversation_count"] == 3
    # and their mail is found by searching `from:` their address (the sidebar's link)
    by_sender = api.get("/api/v1/conversations", params={"q": "from:ola@nordvik.example"})
    assert {c["subject"] for c in by_sender.json()["items"]} == {
        "Contract for review",
        "Anhang mit Umlaut",
        "Cut short",
    }


def test_a_winmail_dat_that_is_no_tnef_stays_as_it_came(
    api: TestClient,
    engine: Engine,
    settings: Settings,
    db_url: str,
    mail_account: MailAccount,
) -> None:
    msg = EmailMessage()
    msg["From"] = "Ola Nordmann <ola@nordvik.example>"
    msg["To"] = mail_account.user
    msg["Subject"] = "Not really TNEF"
    msg["Message-ID"] = "<fake@nordvik.example>"
    msg.set_content("See the file.")
    msg.add_attachment(b"PK\x03\x04 a zip", maintype="application", subtype="ms-tnef",
                       filename="winmail.dat")  # fmt: skip
    mail_account.server.seed(mail_account.user, mail_account.password, "INBOX", [msg.as_bytes()])
    worker_settings = make_settings(db_url, settings.data_dir)
    mailbox_id = add_test_mailbox(engine, worker_settings, mail_account)
    with running_worker(worker_settings, engine):
        wait_until(lambda: caught_up(engine, mailbox_id, "INBOX"), what="the initial sync")
    found = conversation_with(api, "Not really TNEF")
    assert found is not None
    (attachment,) = found["messages"][0]["attachments"]
    assert attachment["filename"] == "winmail.dat"
    assert attachment["unpack_error"].startswith("not a TNEF file")
    assert api.get(attachment["url"]).content == b"PK\x03\x04 a zip"
