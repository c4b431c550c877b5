"""The quoted history at the end of a reply: where it starts, in HTML and in plain text.

One set of patterns for both (the attribution line "On … wrote:" and the "-----Original
Message-----" rule, in the languages the clients write them in); `split_quoted(text)` cuts a
plain-text body into the answer and the quote after it, for the page to fold.

`collapse_quoted(html)` takes sanitised HTML (imapdesk.mail.parsing.sanitize_html) and wraps the
trailing quote in `<details class="quoted"><summary>Show quoted text</summary>…</details>`,
which opens without any script. It works on a parse tree (lxml), never on the markup's text.

The sanitiser drops `class`, `id` and `type`, so the clients' own markers (Gmail's
`div.gmail_quote`, Thunderbird's `div.moz-cite-prefix`, Apple's `blockquote type="cite"`,
Outlook's `div#divRplyFwdMsg` and `div#appendonsend`, Yahoo's `div.yahoo_quoted`) are used
when present, and the shapes they leave behind are recognised otherwise: an attribution line
("On … wrote:") before a quote or before the rest of the body, Outlook's "From: … Subject:"
header block (with the `<hr>` above it) and everything after it, an "-----Original
Message-----" rule, and a last top-level `<blockquote>`.

Only a trailing quote is collapsed: an answer interleaved with quotes stays open, and so does
a message that is nothing but a quote. Everything the wrapper carries is ours: the elements
are made here, with fixed attributes and text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from lxml import etree
from lxml import html as lxml_html

log = logging.getLogger(__name__)

__all__ = ["QUOTE_CLASS", "QUOTE_SUMMARY", "collapse_quoted", "split_quoted"]

QUOTE_CLASS = "quoted"
QUOTE_SUMMARY = "Show quoted text"

_BLANK = " \t\r\n\f\v\xa0\u200b\u200c\u200d\ufeff"
# "On Mon, 3 Mar 2025 at 10:00, Bob <bob@example.com> wrote:", and its translations
_ATTRIBUTION = re.compile(
    r"^.{0,300}\b(?:wrote|writes|schrieb|a écrit|escribió|ha scritto|schreef|skrev|napisał|"
    r"написал|написала)\s*:$",
    re.I | re.S,
)
_ORIGINAL_MESSAGE_RULE = (
    r"-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original|"
    r"Messaggio originale|Oorspronkelijk bericht|Forwarded message)\s*-{2,}"
)
# the rule at the start of an HTML block's text
_FORWARD_RULE = re.compile(rf"^(?:{_ORIGINAL_MESSAGE_RULE})", re.I)
# a plain-text line that is the rule, or the line of underscores Outlook puts above its headers
_FORWARD_RULE_LINE = re.compile(rf"^(?:{_ORIGINAL_MESSAGE_RULE}|_{{10,}})$", re.I)
# Outlook's header block: "From:" first, then "Sent:"/"Date:" and "Subject:" (or translations)
_HEADER_FROM = re.compile(r"^(?:From|Von|De|Da|Van|Från|Fra|Od|От)\s*:", re.I)
_HEADER_OTHERS = (
    re.compile(
        r"\b(?:Sent|Date|Gesendet|Datum|Envoyé|Date d'envoi|Enviado|Fecha|Inviato|Data|"
        r"Verzonden|Skickat|Sendt|Wysłano|Отправлено)\s*:",
        re.I,
    ),
    re.compile(
        r"\b(?:Subject|Betreff|Objet|Asunto|Oggetto|Onderwerp|Ämne|Emne|Temat|Тема)\s*:", re.I
    ),
)
_HEADER_SPAN = 1500  # characters of a header block's text that the labels must lie within

_MARKER_CLASSES = frozenset({"gmail_quote", "gmail_quote_container", "yahoo_quoted"})
_MARKER_IDS = frozenset({"divRplyFwdMsg", "appendonsend"})
_CITE_PREFIX_CLASS = "moz-cite-prefix"
# where a <details> cannot stand: the parser would move it out (tables) or it breaks a list
_NO_WRAP_PARENTS = frozenset(
    {"table", "thead", "tbody", "tfoot", "tr", "colgroup", "ul", "ol", "dl", "select"}
)
_NO_CONTENT_TAGS = frozenset({"br", "hr", "wbr"})
# elements whose text may be an attribution line, a header block or a forward rule
_TEXT_BLOCKS = frozenset({"div", "p", "span", "font", "pre", "td", "section", "article"})
_ATTRIBUTION_MAX = 400


# --- plain text ---------------------------------------------------------------------------------


def split_quoted(text: str) -> tuple[str, str]:
    """The new text and the quoted history after it: from an "-----Original Message-----"
    rule, or the trailing "> " lines with the "On ... wrote:" line above them. A text that is
    nothing but a quote comes back whole, with no quote: there is no answer to show first."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if _FORWARD_RULE_LINE.match(line.strip())), None
    )
    if start is None:
        i = len(lines)
        while i > 0 and (not lines[i - 1].strip() or lines[i - 1].lstrip().startswith(">")):
            i -= 1
        if any(line.strip() for line in lines[i:]):
            start = i
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            if j >= 0 and _ATTRIBUTION.match(lines[j].strip()):
                # "On ..., Bob <bob@example.com>" / "wrote:" wrapped over two lines
                start = j - 1 if j >= 1 and len(lines[j].split()) <= 2 else j
    if start is None or not any(line.strip() for line in lines[:start]):
        return text, ""
    return "\n".join(lines[:start]).rstrip(), "\n".join(lines[start:]).strip("\n")


# --- HTML ---------------------------------------------------------------------------------------


def collapse_quoted(html: str) -> str:
    """`html` with its trailing quoted history wrapped in a closed `<details class="quoted">`;
    unchanged when it has none, when the quote is interleaved with answers, or when the whole
    message is a quote."""
    if not html or not html.strip():
        return html
    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        log.debug("parsing the HTML for quotes failed", exc_info=True)
        return html
    start = _quote_start(root)
    if start is None:
        return html
    _wrap_from(start)
    out = lxml_html.tostring(root, encoding="unicode", method="html")
    # strip the <div> that fragment_fromstring put around the fragment
    return str(out)[len("<div>") : -len("</div>")]


# --- where the quote starts ---------------------------------------------------------------------


def _quote_start(root: etree._Element) -> etree._Element | None:
    """The first element of a collapsible trailing quote, or None."""
    for candidate, end in _candidates(root):
        start = _widen(candidate, root)
        if start is None:
            continue
        if end is _CONTAINER:
            # an attribution line heading a container: the container is the quote; a bare
            # one: all that follows it is
            end = start if start is not candidate else None
        if isinstance(end, etree._Element) and _content_after(end, root):
            continue  # something follows the quote: an answer below it
        if _collapsible(start, root):
            return start
    return None


_CONTAINER = object()  # the end of a quote is the container it is widened to, if any


def _candidates(root: etree._Element) -> Iterator[tuple[etree._Element, object]]:
    """Possible starts of the quote, each with where it ends: an element after which the body
    must hold nothing more, None when everything after the start belongs to the quote, or
    _CONTAINER. The clients' markers first, then the sanitised shapes, in document order."""
    for el in _elements(root):
        if _classes(el) & _MARKER_CLASSES:
            yield el, el
        elif el.get("id") in _MARKER_IDS:
            yield el, None
        elif el.tag == "blockquote" and (el.get("type") or "").lower() == "cite":
            yield _or(_attribution_before(el), el), el
    for el in _elements(root):
        if not _is_block(el) or _in_blockquote(el):
            continue
        head = _text_head(el, _HEADER_SPAN)
        if _is_header_block(head) or _FORWARD_RULE.match(head):
            yield _or(_rule_before(el), el), None
        elif (
            _is_attribution(el, head)
            and _content_after(el, root)
            and getattr(_significant_sibling_after(el), "tag", None) != "blockquote"
        ):
            yield el, _CONTAINER  # Yahoo's shape: the line, then the quoted mail without markup
    last = _last_top_blockquote(root)
    if last is not None:
        yield _or(_attribution_before(last), last), last


def _or(first: etree._Element | None, other: etree._Element) -> etree._Element:
    # not `first or other`: an element without children is false
    return other if first is None else first


def _elements(root: etree._Element) -> Iterator[etree._Element]:
    for el in root.iterdescendants():
        if isinstance(el.tag, str):  # not a comment or processing instruction
            yield el


def _classes(el: etree._Element) -> set[str]:
    return set((el.get("class") or "").split())


def _text_head(el: etree._Element, limit: int) -> str:
    """The start of the element's text, blank runs as one space (reads no more than needed)."""
    parts: list[str] = []
    size = 0
    for piece in el.itertext():
        parts.append(piece)
        size += len(piece)
        if size > limit * 2:
            break
    return " ".join("".join(parts).split()).strip(_BLANK)[: limit + 1]


def _is_block(el: etree._Element) -> bool:
    return el.tag in _TEXT_BLOCKS


def _in_blockquote(el: etree._Element) -> bool:
    return any(a.tag == "blockquote" for a in el.iterancestors())


def _is_header_block(head: str) -> bool:
    return bool(_HEADER_FROM.match(head)) and all(label.search(head) for label in _HEADER_OTHERS)


def _is_attribution(el: etree._Element, head: str) -> bool:
    """A short line of its own ending "wrote:", with a date or an address in it (so that a
    sentence like "The forum wrote:" is not taken for one)."""
    if len(head) > _ATTRIBUTION_MAX or not _ATTRIBUTION.match(head):
        return False
    if any(child.tag in ("div", "p", "blockquote", "table") for child in el.iterdescendants()):
        return False
    return any(ch.isdigit() for ch in head) or "@" in head


def _significant_sibling_before(el: etree._Element) -> etree._Element | None:
    """The element just above `el`, past blank ones and line breaks; None when text lies
    between them or nothing is there."""
    for prev in el.itersiblings(preceding=True):
        if (prev.tail or "").strip(_BLANK):
            return None
        if prev.tag == "hr" or _has_content(prev):
            return prev
    return None


def _significant_sibling_after(el: etree._Element) -> etree._Element | None:
    """The element just below `el`, past blank ones and line breaks; None when text lies
    between them or nothing is there."""
    if (el.tail or "").strip(_BLANK):
        return None
    for after in el.itersiblings():
        if after.tag == "hr" or _has_content(after):
            return after
        if (after.tail or "").strip(_BLANK):
            return None
    return None


def _attribution_before(quote: etree._Element) -> etree._Element | None:
    """The "On … wrote:" line just above a quote (Gmail's gmail_attr, Thunderbird's prefix)."""
    prev = _significant_sibling_before(quote)
    if prev is None:
        return None
    if _CITE_PREFIX_CLASS in _classes(prev) or _is_attribution(
        prev, _text_head(prev, _ATTRIBUTION_MAX)
    ):
        return prev
    return None


def _rule_before(header: etree._Element) -> etree._Element | None:
    """The `<hr>` Outlook puts above its header block."""
    prev = _significant_sibling_before(header)
    return prev if prev is not None and prev.tag == "hr" else None


def _last_top_blockquote(root: etree._Element) -> etree._Element | None:
    tops = [el for el in root.iterdescendants("blockquote") if not _in_blockquote(el)]
    return tops[-1] if tops else None


# --- whether it can be collapsed ----------------------------------------------------------------


def _has_content(el: etree._Element) -> bool:
    """Text or an image: something a reader would miss."""
    if not isinstance(el.tag, str) or el.tag in _NO_CONTENT_TAGS:
        return False
    if el.tag == "img" or next(el.iterdescendants("img"), None) is not None:
        return True
    return any(piece.strip(_BLANK) for piece in el.itertext())


def _widen(start: etree._Element, root: etree._Element) -> etree._Element | None:
    """The outermost element that begins with the quote: Gmail's attribution line lies inside
    its quote container, and the container is what gets wrapped."""
    el = start
    while True:
        parent = el.getparent()
        if parent is None or parent is root or _content_before_in(el, parent):
            break
        el = parent
    parent = el.getparent()
    if parent is None or parent.tag in _NO_WRAP_PARENTS:
        return None
    return el


def _content_before_in(el: etree._Element, parent: etree._Element) -> bool:
    if (parent.text or "").strip(_BLANK):
        return True
    return any(
        _has_content(s) or (s.tail or "").strip(_BLANK) for s in el.itersiblings(preceding=True)
    )


def _content_after(el: etree._Element, root: etree._Element) -> bool:
    """Whether anything a reader would miss follows `el` (outside it) up to the end."""
    node: etree._Element | None = el
    while node is not None and node is not root:
        if (node.tail or "").strip(_BLANK):
            return True
        if any(_has_content(s) or (s.tail or "").strip(_BLANK) for s in node.itersiblings()):
            return True
        node = node.getparent()
    return False


def _content_before(el: etree._Element, root: etree._Element) -> bool:
    node = el
    while node is not root:
        parent = node.getparent()
        if parent is None:
            return False
        if _content_before_in(node, parent):
            return True
        node = parent
    return False


def _quotes_before(start: etree._Element, root: etree._Element) -> bool:
    """Whether a quote stands above `start`, outside it: the answer is interleaved."""
    order = {el: i for i, el in enumerate(root.iter())}  # keys keep the proxies alive
    at = order[start]
    ancestors = set(start.iterancestors())
    return any(order[bq] < at and bq not in ancestors for bq in root.iterdescendants("blockquote"))


def _collapsible(start: etree._Element, root: etree._Element) -> bool:
    """The quote runs from `start` to the end of its parent, nothing but blank space follows
    that up to the end of the body, and above it stands an answer that no quote interrupts."""
    parent = start.getparent()
    if parent is None or _content_after(parent, root):
        return False
    return _content_before(start, root) and not _quotes_before(start, root)


# --- the wrapper --------------------------------------------------------------------------------


def _wrap_from(start: etree._Element) -> None:
    """Move `start` and its following siblings into a new closed `<details class="quoted">`."""
    parent = start.getparent()
    assert parent is not None
    moving = [start, *start.itersiblings()]
    details = etree.Element("details")
    details.set("class", QUOTE_CLASS)
    summary = etree.SubElement(details, "summary")
    summary.text = QUOTE_SUMMARY
    parent.insert(parent.index(start), details)
    for el in moving:
        details.append(el)  # with its tail: the text after it moves along
