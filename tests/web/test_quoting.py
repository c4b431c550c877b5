"""The quoted history of HTML mail, collapsed in the message frame: one sample per client,
modelled on the markup each really sends, taken both as stored (sanitised, which drops the
clients' class and id markers) and as sent; the interleaved and quote-only cases stay open;
real mail from the shared corpus is left alone. Plain-text mail is split at the same lines, in
the same languages."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from lxml import html as lxml_html

from imapdesk.mail.parsing import parse_message, sanitize_html
from imapdesk.mail.quoting import QUOTE_SUMMARY, collapse_quoted, split_quoted
from tests.support.corpus import find_corpus as _find_corpus
from tests.support.quoted_html import CLIENTS


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


# --- the attribution lines and rules, in every language, in HTML and in plain text --------------

# each language's "On … wrote:" line (the verb ends it); the plain-text split and the HTML
# collapse once knew different lists (writes, skrev, napisał, написала were the HTML's alone)
ATTRIBUTIONS = [
    "On Mon, 3 Mar 2025 at 10:00, Bob <bob@example.com> wrote:",
    "On 3 Mar 2025 at 10:00, Bob <bob@example.com> writes:",
    "Am 03.03.2025 um 10:00, Bob <bob@example.com> schrieb:",
    "Le 3 mars 2025 à 10:00, Bob <bob@example.com> a écrit :",
    "El 3 mar 2025, a las 10:00, Bob <bob@example.com> escribió:",
    "Il giorno 3 mar 2025, alle ore 10:00, Bob <bob@example.com> ha scritto:",
    "Op 3 mrt 2025 om 10:00, Bob <bob@example.com> schreef:",
    "Den 3 mars 2025 kl. 10:00, Bob <bob@example.com> skrev:",
    "W dniu 3.03.2025 o 10:00, Bob <bob@example.com> napisał:",
    "3 марта 2025, в 10:00, Bob <bob@example.com> написал:",
    "3 марта 2025, в 10:00, Анна <anna@example.com> написала:",
]
# each language's "-----Original Message-----" rule; Mensaje original, Messaggio originale and
# Oorspronkelijk bericht were the HTML's alone
RULES = [
    "-----Original Message-----",
    "-----Ursprüngliche Nachricht-----",
    "-----Message d'origine-----",
    "-----Mensaje original-----",
    "-----Messaggio originale-----",
    "-----Oorspronkelijk bericht-----",
    "---------- Forwarded message ---------",
]


def test_split_quoted() -> None:
    assert split_quoted("Hi\n\nOn Mon, Bob <b@x> wrote:\n> old\n") == (
        "Hi",
        "On Mon, Bob <b@x> wrote:\n> old",
    )
    assert split_quoted("Hi\n-----Original Message-----\nFrom: x\nold") == (
        "Hi",
        "-----Original Message-----\nFrom: x\nold",
    )
    assert split_quoted("> all quoted\n> here") == ("> all quoted\n> here", "")
    assert split_quoted("plain") == ("plain", "")


@pytest.mark.parametrize("line", ATTRIBUTIONS)
def test_attribution_lines_in_every_language(line: str) -> None:
    text = f"Thanks, it works.\n\n{line}\n> Please restart the router.\n"
    assert split_quoted(text) == ("Thanks, it works.", f"{line}\n> Please restart the router.")
    html = (
        "<p>Thanks, it works.</p><p>"
        + line.replace("<", "&lt;").replace(">", "&gt;")
        + "</p><blockquote>Please restart the router.</blockquote>"
    )
    outside, inside, wrappers = parts(collapse_quoted(html))
    assert wrappers == 1 and outside == "Thanks, it works."
    assert inside == f"{QUOTE_SUMMARY}{line}Please restart the router."


@pytest.mark.parametrize("rule", RULES)
def test_original_message_rules_in_every_language(rule: str) -> None:
    text = f"Thanks, it works.\n\n{rule}\nFrom: Bob\nPlease restart the router.\n"
    assert split_quoted(text) == (
        "Thanks, it works.",
        f"{rule}\nFrom: Bob\nPlease restart the router.",
    )
    html = f"<p>Thanks, it works.</p><p>{rule}</p><p>Please restart the router.</p>"
    outside, inside, wrappers = parts(collapse_quoted(html))
    assert wrappers == 1 and outside == "Thanks, it works."
    assert inside == f"{QUOTE_SUMMARY}{rule}Please restart the router."


def test_outlooks_line_of_underscores_starts_a_plain_text_quote() -> None:
    text = "Thanks.\n\n" + "_" * 32 + "\nFrom: Bob\nSent: Monday\nSubject: Router\n\nOld"
    assert split_quoted(text) == (
        "Thanks.",
        "_" * 32 + "\nFrom: Bob\nSent: Monday\nSubject: Router\n\nOld",
    )
