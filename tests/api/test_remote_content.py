"""The REST API's `html` of a message loads nothing from elsewhere by default, as the web UI
shows mail until the agent asks (a tracking pixel would tell the sender it was read), and gives
the HTML as stored to an integration that asks with `remote_content=allow`; on SQLite and
PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imapdesk.kernel.db import unit_of_work
from tests.support import factories as f

STORED = (
    '<p>Hi <img src="https://tracker.example/p.gif" alt="pixel" width="1">'
    '<img src="http://ads.example/banner.png" alt="banner">'
    '<img src="https://cdn.example/logo.png" alt="logo">'
    '<img src="cid:pic1@x" alt="inline"><img src="data:image/png;base64,iVBORw0KGgo=" alt="data">'
    '<a href="https://example.com/help" rel="noopener noreferrer nofollow">help</a></p>'
)


def _conversation(engine: Engine) -> tuple[int, int]:
    """A conversation with the HTML above, and one merged into it."""
    with unit_of_work(engine) as s:
        box = f.mailbox(s)
        conv = f.conversation(s, box, "Newsletter", customer_email="news@sender.example")
        f.message(s, conv, from_email="news@sender.example", text="Hi", html=STORED)
        merged = f.conversation(s, box, "Newsletter (dup)", merged_into_id=conv.id)
        assert conv.id is not None and merged.id is not None
        return conv.id, merged.id


def _html(api: TestClient, path: str) -> str:
    r = api.get(path)
    assert r.status_code == 200, r.text
    return str(r.json()["messages"][0]["html"])


def test_html_has_no_remote_images_unless_asked(api: TestClient, engine: Engine) -> None:
    conversation_id, _ = _conversation(engine)
    url = f"/api/v1/conversations/{conversation_id}"
    for blocked in (_html(api, url), _html(api, f"{url}?remote_content=block")):
        for remote in ("tracker.example", "ads.example", "cdn.example", "http:", 'src="https'):
            assert remote not in blocked, blocked
        # the images stay, with their alt text; the message's own images keep their source
        for kept in ('alt="pixel"', 'alt="logo"', 'src="cid:pic1@x"', 'alt="data"'):
            assert kept in blocked, blocked
        assert 'src="data:image/png;base64,iVBORw0KGgo="' in blocked
        assert 'href="https://example.com/help"' in blocked  # a link loads nothing by itself
    assert _html(api, f"{url}?remote_content=allow") == STORED
    bad = api.get(f"{url}?remote_content=sometimes")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "remote_content"


def test_a_merged_conversation_redirects_with_the_same_choice(
    api: TestClient, engine: Engine
) -> None:
    conversation_id, merged_id = _conversation(engine)
    r = api.get(f"/api/v1/conversations/{merged_id}?remote_content=allow", follow_redirects=False)
    assert r.status_code == 308
    assert r.headers["location"] == f"/api/v1/conversations/{conversation_id}?remote_content=allow"


def test_the_choice_is_documented(client: TestClient) -> None:
    operation = client.get("/api/v1/openapi.json").json()["paths"][
        "/api/v1/conversations/{conversation_id}"
    ]["get"]
    parameter = next(p for p in operation["parameters"] if p["name"] == "remote_content")
    assert parameter["in"] == "query" and not parameter.get("required")
    assert parameter["schema"]["enum"] == ["block", "allow"]
    assert parameter["schema"]["default"] == "block"
    assert "tracking pixel" in parameter["description"]
    message = client.get("/api/v1/openapi.json").json()["components"]["schemas"]["MessagePublic"]
    assert "remote_content=allow" in message["properties"]["html"]["description"]
