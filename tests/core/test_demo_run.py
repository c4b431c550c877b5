"""`imapdesk demo` (what the README's first command runs): it serves the web UI with the demo's
mail, and Ctrl-C stops all of it, the demo's own Dovecot included."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from imapdesk.devtools.mailserver import LocalMailServer, free_port
from tests.support.corpus import REPO
from tests.support.processes import REQUEST_TIMEOUT, ImapdeskProcess, demo_ports


def test_the_demo_serves_and_ctrl_c_stops_all_of_it(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPDESK_")}
    env |= {"IMAPDESK_DATA_DIR": str(data), "COLUMNS": "200"}
    with demo_ports():
        demo = ImapdeskProcess(
            [sys.executable, "-m", "imapdesk", "demo", "--port", str(port)], cwd=REPO, env=env
        )
        try:
            deadline = time.monotonic() + 180
            demo.wait_for_line("Ctrl-C stops everything", deadline)
            login = demo.wait_for_line("login:", deadline)
            email, password = login.split()[1], login.split()[-1]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as web:
                page = demo.get_when_up(web, "/login", deadline)
                assert page.status_code == 200
                token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
                signed_in = web.post(
                    "/login", data={"email": email, "password": password, "csrf_token": token}
                )
                assert signed_in.status_code == 303
                # the worker takes in the demo mail in the background: conversations are listed
                while "data-id=" not in (listing := web.get("/")).text:
                    assert listing.status_code == 200
                    assert demo.process.poll() is None, demo.output
                    assert time.monotonic() < deadline, demo.output
                    time.sleep(0.2)
        finally:
            code = demo.interrupt()
        assert code == 0, demo.output
        assert not LocalMailServer.load(data / "mailserver").is_running(), demo.output
