"""Screenshots of the main pages with the demo's mail, for the README (docs/screenshots/).

Starts its own Dovecot with the demo boxes (as `imapdesk demo` does, on free ports, in a
temporary directory), reads them with the worker, serves the web UI on loopback and drives
Debian's Chromium (headless) through the pages. Run through scripts/screenshots.sh.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("IMAPDESK_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "screenshots only"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="imapdesk-shots-"))
    work.chmod(0o755)
    os.environ["IMAPDESK_DATA_DIR"] = str(work / "data")
    os.environ["IMAPDESK_DATABASE_URL"] = f"sqlite:///{work / 'data' / 'imapdesk.db'}"
    sys.path.insert(0, str(REPO))
    try:
        shoot(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shoot(work: Path) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright
    from rich.console import Console
    from sqlmodel import Session, col, select

    from imapdesk.api.app import create_app
    from imapdesk.devtools.demo import DEMO_ADMIN, set_up_demo
    from imapdesk.devtools.mailserver import LocalMailServer, free_port
    from imapdesk.domain.accounts.agents import create_agent
    from imapdesk.domain.live import presence
    from imapdesk.domain.outbound import saved_replies
    from imapdesk.kernel.db import get_engine, unit_of_work
    from imapdesk.kernel.models import Agent, Attachment, Conversation, Message, PresenceState
    from imapdesk.kernel.settings import get_settings
    from imapdesk.worker.supervisor import sync_until_caught_up

    console = Console(stderr=True)
    server = LocalMailServer(work / "mailserver", free_port(), free_port(), storage="sdbox")
    server.start()
    try:
        set_up_demo(server, console)
        settings, engine = get_settings(), get_engine()
        if not sync_until_caught_up(settings, engine, timeout=180):
            raise SystemExit("the worker did not read the demo boxes in time")
        with unit_of_work(engine) as s:
            admin = s.exec(select(Agent).where(col(Agent.email) == DEMO_ADMIN)).one()
            admin.password_hash = create_agent(
                s, "bob@example.test", "Bob Builder", PASSWORD
            ).password_hash  # the demo's admin password is random: give it a known one
            saved_replies.save_reply(
                s, admin, "Thanks, we are on it",
                "Thank you for your message. We are looking into it and will get back to you "
                "today.",
            )  # fmt: skip
        with Session(engine) as s:
            # the conversation with an inline image, else the longest one
            rich = s.exec(
                select(Message.conversation_id)
                .join(Attachment, col(Attachment.message_id) == col(Message.id))
                .where(col(Attachment.inline), col(Message.html).is_not(None))
            ).first()
            longest = s.exec(
                select(Conversation.id).order_by(col(Conversation.message_count).desc())
            ).first()
            bob = s.exec(select(Agent).where(col(Agent.email) == "bob@example.test")).one()
        target = rich or longest
        assert target is not None
        with unit_of_work(engine) as s:
            presence.touch(s, target, bob, PresenceState.viewing)

        port = free_port()
        web = uvicorn.Server(
            uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning",
                           timeout_graceful_shutdown=1)
        )  # fmt: skip
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        while not web.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        OUT.mkdir(parents=True, exist_ok=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                context = browser.new_context(viewport={"width": 1280, "height": 860})
                page = context.new_page()
                page.goto(f"{base}/login")
                page.fill("input[name=email]", DEMO_ADMIN)
                page.fill("input[name=password]", PASSWORD)
                page.click("form button[type=submit]")
                page.wait_for_url(f"{base}/")
                page.screenshot(path=OUT / "queue.png")
                page.goto(f"{base}/conversations/{target}")
                page.wait_for_selector("#live-status[data-state=connected]")
                with Session(engine) as s:
                    presence.touch(s, target, bob, PresenceState.replying)
                    s.commit()
                page.wait_for_selector(".presence-replying")
                for details in page.locator("article details.formatted").all()[:1]:
                    details.locator("summary").click()
                page.screenshot(path=OUT / "conversation.png", full_page=True)
                page.click("[data-compose=reply]")
                page.select_option("select[data-saved-reply]", label="Thanks, we are on it")
                page.locator("#composer").scroll_into_view_if_needed()
                page.screenshot(path=OUT / "composer.png")
                page.goto(f"{base}/admin/agents")
                page.screenshot(path=OUT / "admin.png", full_page=True)
                phone = browser.new_context(
                    viewport={"width": 390, "height": 844}, is_mobile=True, device_scale_factor=2
                )
                phone.add_cookies(context.cookies())  # type: ignore[arg-type]
                mobile = phone.new_page()
                mobile.goto(f"{base}/conversations/{target}")
                mobile.wait_for_selector("#live-status[data-state=connected]")
                mobile.screenshot(path=OUT / "conversation-phone.png")
                phone.close()
                context.close()
                browser.close()
        finally:
            web.should_exit = True
            thread.join(10)
        for shot in sorted(OUT.glob("*.png")):
            console.print(f"wrote {shot.relative_to(REPO)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
