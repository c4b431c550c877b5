"""The HTML an agent writes in the rich-text composer, made fit to send.

The editor in the page (Squire, `frontend/static/vendor/`) is the agent's, so its HTML is
untrusted: it is sanitised here with nh3 (as mail HTML is, `imapdesk.mail.parsing`), to a
smaller set of tags than mail may show, before it goes into a message. Images may only be the
composer's own uploads (`/compose/images/<id>`, sent as inline `cid:` parts) or `cid:` parts
already; anything else loses its source. The plain-text alternative is rendered from the
sanitised HTML (`parsing.html_to_text`). No database here.
"""

from __future__ import annotations

import functools
import html as html_lib
import re

import nh3

from imapdesk.mail.parsing import html_to_text

_TAGS = {
    "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "hr", "i", "img",
    "li", "ol", "p", "pre", "s", "span", "strike", "strong", "sub", "sup", "u", "ul",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt", "width", "height"}}
# where the composer shows an uploaded image (whatever path prefix the app is mounted at)
UPLOAD_SRC = re.compile(r"^(?:[^\s\"'<>]*/)?compose/images/(\d{1,18})$")


def _filter(element: str, attribute: str, value: str) -> str | None:
    if element == "img" and attribute == "src":
        value = value.strip()
        if UPLOAD_SRC.match(value) or value.lower().startswith("cid:"):
            return value
        return None
    if element == "a" and attribute == "href":
        head = value.strip().lower()
        return value if head.startswith(("http://", "https://", "mailto:")) else None
    return value


_clean = functools.partial(
    nh3.clean,
    tags=_TAGS,
    clean_content_tags={"script", "style"},
    attributes=_ATTRIBUTES,
    attribute_filter=_filter,
    url_schemes={"http", "https", "mailto", "cid"},
    link_rel="noopener noreferrer",
    strip_comments=True,
)


def sanitize_composed(html: str) -> str:
    """The composer's HTML with only what a reply needs: text formatting, lists, quotes,
    links (http, https, mailto) and the composer's own images."""
    if not html:
        return ""
    return _clean(html.replace("\x00", ""))


def has_content(html: str) -> bool:
    """Whether sanitised HTML says anything (text, or an image)."""
    return bool(html_to_text(html).strip()) or "<img" in html


def uploaded_image_ids(html: str) -> list[int]:
    """The ids of the composer's uploads the (sanitised) HTML shows, in order, once each."""
    found = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    ids = [int(m.group(1)) for src in found if (m := UPLOAD_SRC.match(src))]
    return list(dict.fromkeys(ids))


def with_cids(html: str, cids: dict[int, str]) -> str:
    """The HTML with each upload's source replaced by `cid:` and its Content-ID."""

    def sub(m: re.Match[str]) -> str:
        upload = UPLOAD_SRC.match(m.group(2))
        if upload and int(upload.group(1)) in cids:
            return f'{m.group(1)}"cid:{cids[int(upload.group(1))]}"'
        return m.group(0)

    return re.sub(r'(<img[^>]*\ssrc=)"([^"]*)"', sub, html)


_CID_SRC = re.compile(r'(<img[^>]*\ssrc=)"cid:([^"]*)"', re.IGNORECASE)


def cid_references(html: str) -> list[str]:
    """The `cid:` references the (sanitised) HTML's images make, in order, once each."""
    refs = [html_lib.unescape(m.group(2)).strip() for m in _CID_SRC.finditer(html)]
    return list(dict.fromkeys(refs))


def with_content_ids(html: str, cids: dict[str, str]) -> str:
    """The HTML with each `cid:` reference replaced by the Content-ID given for it."""

    def sub(m: re.Match[str]) -> str:
        ref = html_lib.unescape(m.group(2)).strip()
        return f'{m.group(1)}"cid:{cids[ref]}"' if ref in cids else m.group(0)

    return _CID_SRC.sub(sub, html)


def text_alternative(html: str) -> str:
    """The plain-text part that goes with the HTML."""
    return html_to_text(html) + "\n"


def document(fragment: str) -> str:
    """The composer's fragment as the HTML part of a message."""
    return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{fragment}</body></html>'
