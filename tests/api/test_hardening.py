"""Production hardening: a secret key too short to be one is refused, browsers are told to use
HTTPS only (HSTS), and /docs is served from imapdesk's own files under the policy of its own
pages: no inline script, nothing from elsewhere (the page at work, offline, in Chromium:
tests/web/test_docs_browser.py)."""

from __future__ import annotations

import secrets
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from imapdesk.api.app import create_app
from imapdesk.api.web.templating import STATIC_DIR
from imapdesk.kernel.settings import Settings


@pytest.mark.parametrize("key", ["x", "a" * 31, "é" * 15], ids=["1 byte", "31 bytes", "30 bytes"])
def test_production_refuses_a_short_secret_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", secret_key=key, data_dir=tmp_path)
    message = str(refused.value)
    assert "IMAPDESK_SECRET_KEY" in message and "at least 32" in message
    assert "secrets.token_urlsafe" in message  # how to make one


def test_a_long_enough_secret_key_is_taken(tmp_path: Path) -> None:
    for key in ("k" * 32, "é" * 16, secrets.token_urlsafe(48)):
        assert Settings(environment="production", secret_key=key, data_dir=tmp_path).secret_key
    # development takes anything: nothing there is worth the key
    assert Settings(secret_key="x", data_dir=tmp_path).secret_key == "x"


def test_hsts_in_production_only(
    tmp_path: Path, db_url: str, engine: Engine, client: TestClient
) -> None:
    production = Settings(
        environment="production",
        secret_key=secrets.token_urlsafe(48),
        data_dir=tmp_path / "data",
        database_url=db_url,
    )
    app = create_app(settings=production, engine=engine)
    with TestClient(app, base_url="https://helpdesk.example") as https:
        for path in ("/healthz", "/login", "/api/v1/conversations", "/static/style.css", "/nope"):
            hsts = https.get(path).headers.get("strict-transport-security")
            assert hsts == "max-age=31536000; includeSubDomains", path
    assert "strict-transport-security" not in client.get("/healthz").headers


class _Page(HTMLParser):
    """Every URL the page names, its scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.data: dict[str, str] = {}
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "action", "data", "poster", "srcset"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if "style" in values or tag == "style":
            self.inline.append(f"<{tag} style>")
        if any(name.startswith("on") for name in values):
            self.inline.append(f"<{tag} on...>")
        if tag == "script":
            self.scripts.append(values)
            self._in_script = True
        self.data.update({k: str(v) for k, v in values.items() if k.startswith("data-")})

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_docs_page_and_its_assets_come_from_imapdesk(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parsed = _Page()
    parsed.feed(page.text)
    assert parsed.scripts and not parsed.inline  # no inline script or style
    assert all(script.get("src") for script in parsed.scripts)
    assets = {**{u: "" for u in parsed.urls}, parsed.data["data-openapi-url"]: "application/json"}
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for url, kind in assets.items():
        r = client.get(url)
        assert r.status_code == 200, url
        assert (kind or expected[Path(url).suffix]) in r.headers["content-type"], url
    assert client.get(parsed.data["data-openapi-url"]).json()["info"]["title"] == "imapdesk"
    # the vendored Swagger UI (scripts/vendor-swagger-ui.sh) is what the page loads
    vendored = STATIC_DIR / "vendor" / "swagger-ui"
    assert (vendored / "VERSION").read_text().startswith("swagger-ui-dist ")
    assert any(url.endswith("/vendor/swagger-ui/swagger-ui-bundle.js") for url in assets)


def test_docs_policy_allows_nothing_external(client: TestClient) -> None:
    policy = client.get("/docs").headers["content-security-policy"]
    directives = {
        name: sources for name, *sources in (d.split() for d in policy.split(";") if d.strip())
    }
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    for name, sources in directives.items():
        for source in sources:
            assert source in ("'self'", "'none'") or (name == "img-src" and source == "data:"), (
                name,
                source,
            )
