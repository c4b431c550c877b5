"""`imapdesk rebuild` brings every conversation back from the mailbox, state included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from imapdesk.api.app import create_app
from imapdesk.domain.accounts.agents import create_agent, create_api_token
from imapdesk.domain.conversations import operations
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import (
    ActivitySource,
    Agent,
    ConversationStatus,
    ImapActionState,
    Message,
    PendingImapAction,
)
from tests.support.mail import make_mail
from tests.support.worker import (
    add_test_mailbox,
    caught_up,
    make_settings,
    running_worker,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def _snapshot(client: TestClient, headers: dict[str, str]) -> set[tuple[object, ...]]:
    """Every conversation as the API shows it, keyed by its set of Message-IDs."""
    result = set()
    cursor = None
    while True:
        params: dict[str, object] = {
            "limit": 200,
            "status": ["open", "pending", "closed", "spam", "deleted"],
        }
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/conversations", params=params, headers=headers).json()
        for item in page["items"]:
            detail = client.get(f"/api/v1/conversations/{item['id']}", headers=headers).json()
            result.add(
                (
                    frozenset(m["message_id"] for m in detail["messages"]),
                    detail["status"],
                    detail["claimed"],
                    detail["assignee"],
                    tuple(sorted(detail["tags"])),
                )
            )
        cursor = page["next_cursor"]
        if not cursor:
            return result


def test_rebuild_restores_every_conversation_and_its_state(
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    mail_account,  # type: ignore[no-untyped-def]
) -> None:
    settings = make_settings(db_url, tmp_path / "data")
    mails = [make_mail(i) for i in range(8)]
    mails += [
        make_mail(100 + i, subject="Re: Question number 1", refs="<m1@example.com>")
        for i in range(2)
    ]
    mail_account.server.seed(mail_account.user, mail_account.password, "INBOX", mails)
    mailbox_id = add_test_mailbox(engine, settings, mail_account)
    with unit_of_work(engine) as db:
        alice = create_agent(db, email="alice@example.test", name="Alice", password="pw-alice-1")
        create_agent(db, email="bob@example.test", name="Bob", password="pw-bob-12")
        token = create_api_token(db, alice)
    client = TestClient(create_app(settings=settings, engine=engine))
    headers = {"Authorization": f"Bearer {token}"}

    def conv_of(n: int) -> int:
        with Session(engine) as db:
            cid = db.exec(
                select(Message.conversation_id).where(Message.message_id == f"m{n}@example.com")
            ).one()
            assert cid is not None
            return cid

    with running_worker(settings, engine):
        wait_for(lambda: caught_up(engine, mailbox_id, "INBOX"))
        assert (
            client.post(f"/api/v1/conversations/{conv_of(1)}/claim", headers=headers).status_code
            == 200
        )
        patches = {
            2: {"status": "closed"},
            3: {"status": "pending", "tags": ["billing"]},
            4: {"status": "spam"},
            5: {"assignee": "bob@example.test", "tags": ["vip", "billing"]},
            6: {"status": "deleted"},
            7: {"tags": ["later"], "status": "closed"},
        }
        for n, body in patches.items():
            response = client.patch(
                f"/api/v1/conversations/{conv_of(n)}", json=body, headers=headers
            )
            assert response.status_code == 200, response.text
        with unit_of_work(engine) as db:
            bob = db.exec(select(Agent).where(Agent.email == "bob@example.test")).one()
            operations.mark_read(db, conv_of(0), True, source=ActivitySource.api, agent=bob)

        def written_back() -> bool:
            with Session(engine) as db:
                return (
                    db.exec(
                        select(func.count())
                        .select_from(PendingImapAction)
                        .where(PendingImapAction.state != ImapActionState.done)
                    ).one()
                    == 0
                )

        wait_for(written_back, timeout=30, what="the write-back")
    before = _snapshot(client, headers)
    assert len(before) == 8
    assert {s[1] for s in before} == {s.value for s in ConversationStatus}

    env = dict(os.environ, IMAPDESK_DATABASE_URL=db_url, IMAPDESK_DATA_DIR=str(settings.data_dir))
    done = subprocess.run(
        [sys.executable, "-m", "imapdesk", "rebuild", "--yes"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with Session(engine) as db:
        assert db.exec(select(func.count()).select_from(Message)).one() == 10
    after = _snapshot(client, headers)
    assert after == before
