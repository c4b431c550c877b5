"""The search's terms and its query language, without a database: what the index holds for a
text, what a typed query looks for, and where a snippet marks what was found."""

# ruff: noqa: RUF001  (Chinese and Japanese text, with its full-width punctuation)

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imapdesk.domain.conversations.search import Snippet, _snippet_of
from imapdesk.domain.conversations.search_query import (
    MAX_CLAUSES,
    SearchField,
    parse_query,
)
from imapdesk.domain.conversations.search_text import (
    Term,
    find_phrases,
    index_terms,
    phrase_terms,
)
from imapdesk.kernel.errors import InvalidInput


def terms(query: str) -> list[list[tuple[str, bool]]]:
    return [[(t.text, t.prefix) for t in c.terms] for c in parse_query(query).clauses]


def test_unspaced_scripts_are_indexed_by_pairs_of_characters() -> None:
    assert index_terms("无法登录系统") == ["无法", "法登", "登录", "录系", "系统", "统"]
    # Japanese: kanji, hiragana and katakana (with its prolonged sound mark) in one run
    assert index_terms("お支払方法") == ["お支", "支払", "払方", "方法", "法"]
    assert index_terms("サーバー") == ["サー", "ーバ", "バー", "ー"]
    # a lone character, and letters or digits beside an unspaced run
    assert index_terms("订单12345已发货") == ["订单", "单", "12345", "已发", "发货", "货"]
    assert index_terms("iPhone手机") == ["iphone", "手机", "机"]
    assert index_terms("결제가 안돼요") == ["결제", "제가", "가", "안돼", "돼요", "요"]


def test_words_are_folded_and_kept_whole() -> None:
    assert index_terms("Résumé ÜBER straße") == ["resume", "uber", "strasse"]
    # full-width letters and digits, half-width katakana
    assert index_terms("ＡＢＣ１２３ ｶﾀｶﾅ") == ["abc123", "カタ", "タカ", "カナ", "ナ"]
    # vowel signs are part of a Devanagari word
    assert index_terms("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert index_terms("o'brien_x 1.21 gigawatts") == ["o", "brien", "x", "1", "21", "gigawatts"]
    assert index_terms("a" * 100) == ["a" * 64]


def test_a_query_word_is_what_the_index_holds_for_it() -> None:
    # two characters: one term; four: the phrase of their pairs, without the lone last one
    # (the mail's run may go on after it)
    assert phrase_terms("登录", open_end=False) == [Term("登录")]
    assert phrase_terms("支払方法", open_end=False) == [Term("支払"), Term("払方"), Term("方法")]
    # one character: the start of any pair (or the run's last character)
    assert phrase_terms("登", open_end=False) == [Term("登", prefix=True)]
    # a run in the middle of a phrase is whole, its last character too
    assert phrase_terms("订单12345", open_end=False) == [
        Term("订单"),
        Term("单"),
        Term("12345"),
    ]
    assert phrase_terms("capac", open_end=True) == [Term("capac", prefix=True)]
    assert phrase_terms("c", open_end=True) == [Term("c")]


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("您好，我从昨天开始一直无法登录我的账户", "登录"),
        ("先月分の請求書につきまして、お支払方法を銀行振込から", "支払方法"),
        ("アカウントがロックされていると表示されます", "ロック"),
        ("订单12345已发货", "单12345"),
        ("The flux capacitor is broken", "flux capacitor"),
    ],
)
def test_every_part_of_a_text_is_found_by_its_phrase(text: str, phrase: str) -> None:
    """The query's terms stand one after the other among the index's terms of the text."""
    held = index_terms(text)
    wanted = phrase_terms(phrase, open_end=False)
    assert any(
        all(
            held[i + k].startswith(t.text) if t.prefix else held[i + k] == t.text
            for k, t in enumerate(wanted)
        )
        for i in range(len(held) - len(wanted) + 1)
    )
    start = text.index(phrase)
    assert find_phrases(text, [wanted]) == [(start, start + len(phrase))]


def test_the_query_language() -> None:
    query = parse_query(
        'from:alice to:"Bob Brown" cc:carol subject:refund has:attachment is:unread '
        'tag:VIP before:2024-06-01 after:2024-05-01 "flux capacitor" 登录 re:invoice'
    )
    fields = [(c.field, [t.text for t in c.terms]) for c in query.clauses]
    assert fields == [
        (SearchField.sender, ["alice"]),
        (SearchField.recipient, ["bob", "brown"]),
        (SearchField.recipient, ["carol"]),
        (SearchField.subject, ["refund"]),
        (None, ["flux", "capacitor"]),
        (None, ["登录"]),
        # not an operator: text
        (None, ["re", "invoice"]),
    ]
    assert query.has_attachment and query.unread is True and query.tags == ("VIP",)
    assert query.before == datetime(2024, 6, 1, tzinfo=UTC)
    assert query.after == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_query("is:read").unread is False
    # an operator being typed asks for nothing yet; a query of punctuation asks for no word
    assert not parse_query("tag:").asked and not parse_query("from: tag:").asked
    assert parse_query("?!").asked and not parse_query("?!").clauses
    assert not parse_query("   ").asked


def test_the_last_word_typed_is_a_prefix() -> None:
    assert terms("flux capac") == [[("flux", False)], [("capac", True)]]
    assert terms("flux capac ") == [[("flux", False)], [("capac", False)]]
    assert terms("vitamin c") == [[("vitamin", False)], [("c", False)]]
    assert terms("100%") == [[("100", False)]]  # a word followed by anything is finished
    assert terms('"flux capac"') == [[("flux", False), ("capac", False)]]
    # a phrase still being typed: its closing quote is missing
    assert terms('"flux capac') == [[("flux", False), ("capac", True)]]
    assert terms("from:ali") == [[("ali", True)]]
    assert len(parse_query(" ".join(f"w{i}" for i in range(20))).clauses) == MAX_CLAUSES


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("has:pdf", "has: takes attachment"),
        ("is:urgent", "is: takes unread or read"),
        ("before:May", "before: takes a date as YYYY-MM-DD"),
        ("after:2024-13-01", "after: takes a date as YYYY-MM-DD"),
    ],
)
def test_a_value_an_operator_cannot_take_says_what_it_takes(query: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_query(query)
    assert says in caught.value.message and caught.value.details["field"] == "q"


def test_a_snippet_marks_what_was_found_and_holds_the_text_as_given() -> None:
    text = "Hello,\n\nthe <b>flux</b> capacitor & the   flux   capacitor again.\n" + "x " * 300
    snippet = _snippet_of(text, [phrase_terms("flux capacitor", open_end=False)])
    assert isinstance(snippet, Snippet)
    assert [p for p, found in snippet.parts if found] == ["flux capacitor"]
    # markup in the mail stays text (the page escapes it); white space is one space
    assert snippet.text.startswith("Hello, the <b>flux</b> capacitor & the flux capacitor")
    assert snippet.text.endswith("…")
    start, end = snippet.highlights[0]
    assert snippet.text[start:end] == "flux capacitor"
    # the start of a long text is cut at a space, before what was found
    long = "word " * 100 + "您好，我一直无法登录我的账户。"
    cut = _snippet_of(long, [phrase_terms("登录", open_end=False)])
    assert cut is not None and cut.text.startswith("…word") and "无法登录我的" in cut.text
    assert _snippet_of("nothing here", [phrase_terms("登录", open_end=False)]) is None
