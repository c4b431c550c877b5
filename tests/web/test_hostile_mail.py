"""Hostile mail in a real browser: nothing in it runs, and nothing is fetched from elsewhere
until the agent asks for remote images (then images only, loaded straight from their host with
no referrer). Once as stored by the real parser (sanitised with nh3) and once stored raw, to
show the sandboxed frame and its CSP hold on their own. The remote host is a loopback HTTP
server that counts requests. (SQLite; the CSP headers are checked on both databases in
test_conversation.py.)"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine

from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.settings import Settings
from imapdesk.mail.parsing import parse_message
from tests.support import factories as f
from tests.support.browser import LiveServer, signed_in_context

pytestmark = pytest.mark.browser

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


class Counter(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        png = self.path.endswith(".png")
        self.send_response(200)
        self.send_header("Content-Type", "image/png" if png else "text/html")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(PNG if png else b"<script>window.top.name='pwned-remote'</script>")

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (Counter,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def hostile_html(h: str) -> str:
    pwn = "window.top.name='pwned-{0}';parent.document.title='pwned-{0}'"
    return f"""<html><head>
<meta http-equiv="refresh" content="0;url={h}/meta-refresh">
<base href="{h}/base/">
<link rel="preload" as="image" href="{h}/img-preload.png">
<link rel="stylesheet" href="{h}/link-stylesheet">
<link rel="prefetch" href="{h}/link-prefetch">
<style>@import url({h}/css-import); p {{ background: url({h}/css-style-bg.png) }}</style>
<script>{pwn.format("script")};fetch('{h}/js-fetch')</script>
</head><body background="{h}/img-body.png" onload="{pwn.format("onload")}">
<p>Hello <b>agent</b></p>
<img src="{h}/img-remote.png" alt="tracker">
<img srcset="{h}/img-srcset.png 2x">
<img src="x" onerror="{pwn.format("onerror")};new Image().src='{h}/js-onerror'">
<a href="javascript:{pwn.format("href")}">click</a>
<a href="&#106;&#97;vascript:{pwn.format("encoded")}">encoded</a>
<a href="jav&#x09;ascript:{pwn.format("tab")}">tab</a>
<div style="background:url({h}/css-inline-bg.png);width:expression(alert(1))">bg</div>
<table background="{h}/img-table.png"><tr><td>cell</td></tr></table>
<svg onload="{pwn.format("svg")}"><image href="{h}/img-svg.png"/>
<script>{pwn.format("svgscript")}</script>
<a xlink:href="javascript:{pwn.format("svglink")}"><text>t</text></a></svg>
<math><mtext><table><mglyph><style><img src=x onerror="{pwn.format("mxss")}">
</style></mglyph></table></mtext></math>
<math href="javascript:{pwn.format("mathhref")}">m</math>
<iframe srcdoc="<script>{pwn.format("srcdoc")}</script>"></iframe>
<iframe src="{h}/iframe"></iframe>
<object data="{h}/object"></object><embed src="{h}/embed">
<video poster="{h}/img-poster.png" src="{h}/video"></video><audio src="{h}/audio" autoplay></audio>
<form action="{h}/form" method="post"><input name="q" autofocus onfocus="{pwn.format("focus")}">
<button formaction="{h}/formaction">go</button></form>
<details open ontoggle="{pwn.format("toggle")}">x</details>
<isindex action="{h}/isindex">
</body></html>"""


def hostile_mime(h: str) -> bytes:
    html = base64.encodebytes(hostile_html(h).encode()).decode()
    return (
        "From: Mallory <mallory@evil.example>\r\nTo: support@example.com\r\n"
        "Subject: Invoice\r\nMessage-ID: <evil@evil.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + html
    ).encode()


def test_hostile_mail_runs_nothing_and_fetches_nothing_until_allowed(
    live_server: LiveServer,
    new_context: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    agents: dict[str, int],
    remote: tuple[str, list[str]],
) -> None:
    host, hits = remote
    parsed = parse_message(hostile_mime(host))
    assert parsed.html is not None
    with unit_of_work(engine) as s:
        conv = f.conversation(
            s, f.mailbox(s), "<script>window.top.name='owned-subject'</script>", minutes=1
        )
        f.message(s, conv, from_name="<img src=x onerror=alert(1)>", text="", html=parsed.html)
        # the same mail stored without sanitising: the frame alone must hold
        f.message(s, conv, minutes=1, from_name="Raw", text="", html=hostile_html(host))
    page = signed_in_context(new_context, live_server, settings, engine, agents["alice"]).new_page()
    page.goto(f"{live_server.url}/conversations/{conv.id}")
    title = page.title()
    frames = page.locator("iframe.html-body")
    expect(frames).to_have_count(2)
    for i in range(2):
        expect(page.frame_locator("iframe.html-body").nth(i).locator("b")).to_have_text("agent")
    expect(page.locator("h1")).to_have_text("<script>window.top.name='owned-subject'</script>")

    # nothing ran, nothing was fetched
    assert page.evaluate("window.name") == ""
    assert page.title() == title and "pwned" not in title
    assert hits == []
    bodies = [frame for frame in page.frames if "/body" in frame.url]
    assert len(bodies) == 2
    for frame in bodies:
        assert frame.evaluate("document.title") == ""
    # nested frames (srcdoc, remote) got nowhere: blocked, or empty
    assert all(
        frame.url in ("about:srcdoc", "about:blank")
        or "/body" in frame.url
        or frame.url.startswith("chrome-error:")
        or frame == page.main_frame
        for frame in page.frames
    ), [frame.url for frame in page.frames]

    # the agent asks for the images: images come, and still nothing else
    buttons = page.locator("[data-load-images]")
    expect(buttons).to_have_count(2)
    for i in range(2):
        buttons.nth(i).click()
    expect(page.frame_locator("iframe.html-body").nth(1).locator("b")).to_have_text("agent")
    _wait_for(lambda: "/img-remote.png" in hits)
    assert [p for p in hits if not p.endswith(".png")] == []
    assert page.evaluate("window.name") == "" and page.title() == title


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
