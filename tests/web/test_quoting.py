"""The quoted history of HTML mail, collapsed in the message frame: one sample per client,
modelled on the markup each really sends, taken both as stored (sanitised, which drops the
clients' class and id markers) and as sent; the interleaved and quote-only cases stay open;
real mail from the shared corpus is left alone."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from lxml import html as lxml_html

from imapdesk.mail.parsing import parse_message, sanitize_html
from imapdesk.mail.quoting import QUOTE_SUMMARY, collapse_quoted
from tests.conftest import _find_corpus

GMAIL = """<div dir="ltr">Thanks, that fixed it.<div><br></div><div>Anna</div></div><br>\
<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Mon, \
3 Mar 2025 at 10:00, Example Support &lt;<a href="mailto:support@example.com">\
support@example.com</a>&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px \
0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">Please \
restart the router.</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On \
Sun, 2 Mar 2025 at 09:00, Anna &lt;<a href="mailto:anna@example.org">anna@example.org</a>\
&gt; wrote:<br></div><blockquote class="gmail_quote">The router is down.</blockquote></div>\
</blockquote></div>
"""

APPLE = """<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">\
</head><body style="overflow-wrap: break-word; -webkit-nbsp-mode: space; line-break: \
after-white-space;">Yes, that works now.<div><br></div><div>Carl</div><div><br \
id="lineBreakAtBeginningOfMessage"><div><br><blockquote type="cite"><div>On 3 Mar 2025, at \
10:00, Example Support &lt;support@example.com&gt; wrote:</div><br \
class="Apple-interchange-newline"><div><div>Please restart the router.</div></div>\
</blockquote></div><br></div></body></html>"""

THUNDERBIRD = """<!DOCTYPE html><html><head><meta http-equiv="Content-Type" \
content="text/html; charset=UTF-8"></head><body><p>Still broken, the log is attached.</p>\
<p>Dana<br></p><div class="moz-cite-prefix">On 03/03/2025 10:00, Example Support wrote:<br>\
</div><blockquote type="cite" cite="mid:abc@example.com"><p>Please restart the router.</p>\
</blockquote></body></html>"""

OUTLOOK_WEB = """<html><head><style type="text/css" style="display:none;"> P \
{margin-top:0;margin-bottom:0;} </style></head><body dir="ltr"><div class="elementToProof" \
style="font-family: Aptos, Calibri, sans-serif; font-size: 12pt; color: rgb(0, 0, 0);">We \
still see the error.</div><div class="elementToProof">Erik</div><div id="appendonsend"></div>\
<hr style="display:inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" dir="ltr">\
<font face="Calibri, sans-serif" style="font-size:11pt" color="#000000"><b>From:</b> Example \
Support &lt;support@example.com&gt;<br><b>Sent:</b> Monday, March 3, 2025 10:00<br><b>To:</b> \
Erik &lt;erik@example.org&gt;<br><b>Subject:</b> Re: Router</font><div>&nbsp;</div></div>\
<div><div dir="ltr">Please restart the router.</div></div></body></html>"""

OUTLOOK_DESKTOP = """<html xmlns:o="urn:schemas-microsoft-com:office:office"><body lang="EN-US" \
link="#0563C1"><div class="WordSection1"><p class="MsoNormal">Thanks, we will try that.\
<o:p></o:p></p><p class="MsoNormal"><o:p>&nbsp;</o:p></p><div><div style="border:none;\
border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm"><p class="MsoNormal"><b><span \
lang="DE">Von:</span></b><span lang="DE"> Example Support &lt;support@example.com&gt; <br>\
<b>Gesendet:</b> Montag, 3. März 2025 10:00<br><b>An:</b> Fiona &lt;fiona@example.org&gt;<br>\
<b>Betreff:</b> AW: Router<o:p></o:p></span></p></div></div><p class="MsoNormal"><o:p>&nbsp;\
</o:p></p><p class="MsoNormal">Please restart the router.<o:p></o:p></p></div></body></html>"""

YAHOO = """<html><head></head><body><div class="ydp1a2b3c4dyahoo-style-wrap" \
style="font-family:Helvetica Neue, Helvetica, Arial, sans-serif;font-size:13px;"><div \
dir="ltr" data-setdir="false">Here is the invoice number: 4711.</div></div><div \
id="yahoo_quoted_9876543210" class="yahoo_quoted"><div style="font-family:'Helvetica Neue', \
Helvetica, Arial, sans-serif;font-size:13px;color:#26282a;"><div>On Monday, March 3, 2025 at \
10:00:00 AM GMT+1, Example Support &lt;support@example.com&gt; wrote:</div><div><br></div>\
<div><br></div><div><div dir="ltr">Which invoice is it about?</div></div></div></div></body>\
</html>"""

CLIENTS = {
    "gmail": (GMAIL, "Thanks, that fixed it.", "On Mon, 3 Mar 2025 at 10:00"),
    "apple": (APPLE, "Yes, that works now.", "On 3 Mar 2025, at 10:00"),
    "thunderbird": (THUNDERBIRD, "Still broken", "On 03/03/2025 10:00, Example Support wrote:"),
    "outlook-web": (OUTLOOK_WEB, "We still see the error.", "From: Example Support"),
    "outlook-desktop": (OUTLOOK_DESKTOP, "Thanks, we will try that.", "Von: Example Support"),
    "yahoo": (YAHOO, "Here is the invoice number: 4711.", "On Monday, March 3, 2025"),
}


def parts(html: str) -> tuple[str, str, int]:
    """The text outside the collapsed quote, the text inside it, and how many wrappers."""
    root = lxml_html.fragment_fromstring(html, create_parent="div")
    wrappers = root.xpath('//details[@class="quoted"]')
    inside = " ".join(" ".join("".join(w.itertext()).split()) for w in wrappers)
    for w in wrappers:
        w.drop_tree()
    outside = " ".join("".join(root.itertext()).split())
    return outside, inside, len(wrappers)


@pytest.mark.parametrize("stored", [True, False], ids=["sanitised", "as-sent"])
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_each_clients_quote_is_collapsed(client: str, stored: bool) -> None:
    raw, answer, attribution = CLIENTS[client]
    html = sanitize_html(raw) if stored else raw
    collapsed = collapse_quoted(html)
    outside, inside, wrappers = parts(collapsed)
    assert wrappers == 1, collapsed
    assert answer in outside and "restart the router" not in outside.replace("try that", "")
    assert inside.startswith(QUOTE_SUMMARY)
    assert attribution in inside and ("restart the router" in inside or "Which invoice" in inside)
    if client == "gmail":  # the older quote nested inside goes along, in the one wrapper
        assert "The router is down." in inside
    if client == "outlook-web":  # the rule Outlook draws above its header block goes in too
        assert "<hr" not in collapsed.split("<details", 1)[0]
    # closed to begin with; it opens without script
    assert f'<details class="quoted"><summary>{QUOTE_SUMMARY}</summary>' in collapsed


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_nothing_but_the_wrapper_is_added(client: str) -> None:
    stored = sanitize_html(CLIENTS[client][0])
    collapsed = collapse_quoted(stored)
    opening = f'<details class="quoted"><summary>{QUOTE_SUMMARY}</summary>'
    before, after = collapsed.split(opening)
    inner, _, rest = after.rpartition("</details>")
    # the serialiser writes a no-break space as the character itself
    assert before + inner + rest == stored.replace("&nbsp;", "\xa0")


def test_an_answer_interleaved_with_quotes_stays_open() -> None:
    interleaved = (
        "<div>Hi Bob, my answers are below.</div>"
        '<blockquote type="cite">Does it work on Linux?</blockquote><div>Yes, since 2.1.</div>'
        '<blockquote type="cite">And on Windows?</blockquote><div>Not yet.</div>'
    )
    # the last quote ends the mail, but answers stand between the quotes above it
    trailing = (
        "<div>See below.</div><blockquote>Does it work on Linux?</blockquote><div>Yes.</div>"
        "<blockquote>And on Windows?<br>Thanks, Bob</blockquote>"
    )
    # an answer written below the quote (bottom-posting)
    below = (
        "<div>On 03/03/2025 10:00, Example Support wrote:<br></div>"
        "<blockquote><p>Please restart the router.</p></blockquote><p>Done, still broken.</p>"
    )
    for html in (interleaved, trailing, below):
        for sample in (html, sanitize_html(html)):
            assert collapse_quoted(sample) == sample


def test_a_message_that_is_only_a_quote_is_not_hidden() -> None:
    only_quote = '<blockquote type="cite"><div>On 3 Mar 2025, Bob wrote:</div>Hi</blockquote>'
    forward = (
        '<div id="divRplyFwdMsg"><b>From:</b> Bob &lt;bob@example.org&gt;<br><b>Sent:</b> '
        "Monday<br><b>To:</b> Support<br><b>Subject:</b> Router</div><div>The router.</div>"
    )
    gmail_forward = (
        '<div class="gmail_quote"><div class="gmail_attr">---------- Forwarded message '
        "---------<br>From: Bob</div><br>The router.</div>"
    )
    blank_before = "<div><br></div><p>&nbsp;</p><blockquote>Old mail</blockquote>"
    for html in (only_quote, forward, gmail_forward, blank_before):
        for sample in (html, sanitize_html(html)):
            assert collapse_quoted(sample) == sample


def test_look_alikes_are_not_quotes() -> None:
    samples = (
        # a sentence ending "wrote:" with nothing to say it is a mail's attribution line
        "<p>Hello,</p><p>The forum wrote:</p><p>you need a new router</p><p>Is that true?</p>",
        # a quotation the customer made in the middle of the mail
        "<p>The manual says</p><blockquote>restart it</blockquote><p>but that fails.</p>",
        # a feed's footer: a rule and a Date:/Author: table, no mail headers
        "<p>News</p><hr><table><tr><td>Date:</td><td>today</td></tr>"
        "<tr><td>Author:</td><td>someone</td></tr></table>",
        "",
        "plain words",
    )
    for html in samples:
        for sample in (html, sanitize_html(html)):
            assert collapse_quoted(sample) == sample


def test_a_quote_after_plain_text_and_inside_a_table_cell() -> None:
    html = "Thanks!<br><blockquote>Old mail</blockquote>"
    outside, inside, wrappers = parts(collapse_quoted(html))
    assert (wrappers, outside) == (1, "Thanks!") and inside.endswith("Old mail")
    cell = "<table><tr><td><p>Answer</p><blockquote>Old mail</blockquote></td></tr></table>"
    outside, inside, wrappers = parts(collapse_quoted(cell))
    assert (wrappers, outside) == (1, "Answer")
    # a quote that is a table row cannot be wrapped where it stands: left alone
    row = "<table><tr><td>Answer</td></tr><tr><td><blockquote>Old</blockquote></td></tr></table>"
    assert parts(collapse_quoted(row))[2] in (0, 1)


def test_the_mails_own_details_and_event_handlers_stay_stripped() -> None:
    hostile = (
        "<p>Answer</p>"
        '<details class="quoted" open ontoggle="alert(1)"><summary onclick="alert(2)" '
        'class="quoted">Show quoted text</summary>fake</details>'
        '<div class="gmail_quote"><div class="gmail_attr" onclick="alert(3)">On Mon, 3 Mar 2025,'
        ' Bob &lt;bob@example.org&gt; wrote:</div><blockquote class="gmail_quote" '
        'onmouseover="alert(4)">Old</blockquote></div>'
    )
    collapsed = collapse_quoted(sanitize_html(hostile))
    assert "alert" not in collapsed and "on" + "toggle" not in collapsed
    # "quoted" only on the wrapper made here; else only the clients' quote marks survive
    classes = re.findall(r'class="([^"]*)"', collapsed)
    assert classes.count("quoted") == 1 and set(classes) == {"quoted", "gmail_quote", "gmail_attr"}
    outside, inside, wrappers = parts(collapsed)
    assert wrappers == 1 and "fake" in outside and inside.endswith("Old")


def _corpus_html() -> list[tuple[str, str]]:
    corpus = _find_corpus()
    found = []
    for folder, _dirs, files in os.walk(corpus):
        for name in files:
            if name.endswith((".json", ".txt", ".md")) or "COPYING" in name:
                continue
            path = Path(folder) / name
            try:
                parsed = parse_message(path.read_bytes())
            except Exception:  # the parser's robustness is tested elsewhere
                continue
            if parsed.html:
                found.append((str(path.relative_to(corpus)), parsed.html))
    return found


def test_real_html_mail_from_the_corpus() -> None:
    """The corpus holds HTML mail, none of it a reply with a quote (newsletters, feeds, test
    messages): every one is served as stored, and nothing in it trips the parser."""
    bodies = _corpus_html()
    assert len(bodies) >= 10
    for name, html in bodies:
        assert collapse_quoted(html) == html, name
