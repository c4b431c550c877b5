"""`imapdesk demo` (what the README's first command runs): it serves the web UI with the demo's
mail, and Ctrl-C stops all of it, the demo's own Dovecot included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from imapdesk.devtools.mailserver import LocalMailServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_serves_and_ctrl_c_stops_all_of_it(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPDESK_")}
    env |= {"IMAPDESK_DATA_DIR": str(data), "COLUMNS": "200"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "imapdesk", "demo", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("Ctrl-C stops everything" in line for line in lines):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        login = next(line for line in lines if line.startswith("login:"))
        email, password = login.split()[1], login.split()[-1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as web:
            while True:  # the server binds its port right after printing the login
                try:
                    page = web.get("/login")
                    break
                except httpx.TransportError:
                    assert demo.poll() is None and time.monotonic() < deadline, "".join(lines)
                    time.sleep(0.2)
            assert page.status_code == 200
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            signed_in = web.post(
                "/login", data={"email": email, "password": password, "csrf_token": token}
            )
            assert signed_in.status_code == 303
            # the worker takes in the demo mail in the background: conversations are listed soon
            while "data-id=" not in (listing := web.get("/")).text:
                assert listing.status_code == 200
                assert demo.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.2)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
    reader.join(10)
    assert demo.returncode == 0, "".join(lines)
    assert not LocalMailServer.load(data / "mailserver").is_running(), "".join(lines)
