"""What search takes for a word: one tokenizer for the index and the query, so they agree.

Words are runs of letters, marks and digits (`regex`'s Unicode properties, so a Devanagari or
Thai word keeps its vowel signs). They are case-folded, compatibility-normalised (full-width
letters and digits are ASCII, half-width katakana is full-width) and Latin, Greek and Cyrillic lose
their accents (`résumé` is `resume`).

Scripts written without spaces between words (Chinese, Japanese, Korean, Thai, Lao, Khmer,
Burmese) have no words to find, so their runs are cut into overlapping pairs of characters
(bigrams) and the run's last character on its own: `无法登录系统` is `无法 法登 登录 录系 系统 统`.
A word of two characters is then one term (`登录`), a longer one the phrase of its pairs
(`支払方法`: `支払 払方 方法`), and a single character the start of a term (`登*`), so any
part of such a run is found, wherever it stands. Trigram indexes (SQLite's FTS5 `trigram`,
PostgreSQL's `pg_trgm`) find nothing shorter than three characters, and most Chinese words
are two.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import regex

# a term longer than this is cut (base64 or a long hex id is no word anyone types)
MAX_TERM = 64
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")
# ASCII text, the most of mail, takes the standard library's faster engine
_ASCII_WORD = re.compile(r"[a-z0-9]+")
# the scripts written without spaces (by Script_Extensions, so that the prolonged sound mark
# ー and the iteration mark 々 stay in their run)
_UNSPACED = regex.compile(
    r"[\p{scx=Hani}\p{scx=Hira}\p{scx=Kana}\p{scx=Hang}\p{scx=Bopo}"
    r"\p{scx=Thai}\p{scx=Laoo}\p{scx=Khmr}\p{scx=Mymr}]+"
)
_ACCENTS = regex.compile(r"[\u0300-\u036f]+")


@dataclass(frozen=True, slots=True)
class Piece:
    """A word, or a run of an unspaced script, normalised, with where it stands in the text."""

    text: str
    start: int
    end: int
    unspaced: bool


def _fold_word(word: str) -> str:
    folded = word.casefold()
    if folded.isascii():
        return folded
    return unicodedata.normalize("NFKC", _ACCENTS.sub("", unicodedata.normalize("NFKD", folded)))


def pieces(text: str) -> Iterator[Piece]:
    """The words and unspaced runs of `text`, in order."""
    for match in _WORD.finditer(text):
        word, offset = match.group(), match.start()
        if word.isascii():
            yield Piece(word.lower()[:MAX_TERM], offset, match.end(), False)
            continue
        at = 0
        for run in _UNSPACED.finditer(word):
            if run.start() > at:
                yield from _words(word[at : run.start()], offset + at)
            yield Piece(
                unicodedata.normalize("NFKC", run.group()),
                offset + run.start(),
                offset + run.end(),
                True,
            )
            at = run.end()
        if at < len(word):
            yield from _words(word[at:], offset + at)


def _words(word: str, offset: int) -> Iterator[Piece]:
    # normalising may make separators (a vulgar fraction becomes digits and a slash): split
    for part in _WORD.findall(_fold_word(word)):
        yield Piece(part[:MAX_TERM], offset, offset + len(word), False)


def bigrams(run: str) -> list[str]:
    """The terms of an unspaced run: its pairs of characters, then its last character."""
    if len(run) < 2:
        return [run] if run else []
    return [run[i : i + 2] for i in range(len(run) - 1)] + [run[-1]]


def index_terms(text: str) -> list[str]:
    """The terms of `text` in order, as the index holds them (as `pieces` makes them, with
    less work for ASCII words, which most mail is made of)."""
    if text.isascii():
        terms = _ASCII_WORD.findall(text.lower())
        if max(map(len, terms), default=0) > MAX_TERM:
            terms = [t[:MAX_TERM] for t in terms]
        return terms
    terms = []
    for word in _WORD.findall(text):
        if word.isascii():
            terms.append(word.lower()[:MAX_TERM])
            continue
        for piece in pieces(word):
            if piece.unspaced:
                terms.extend(bigrams(piece.text))
            else:
                terms.append(piece.text)
    return terms


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    # matches any term that starts with it
    prefix: bool = False


def phrase_terms(text: str, *, open_end: bool) -> list[Term]:
    """The terms that, one after the other, find `text` typed as a word or a phrase.

    A run of an unspaced script may go on in the mail beyond the end of what was typed: at
    the end, its pairs without the lone last character (a single character is the start of a
    term). `open_end`: the agent may still be typing the last word (when `text` ends with it),
    so it is a prefix too (from two letters on: one would match nearly everything).
    """
    found = list(pieces(text))
    terms: list[Term] = []
    for n, piece in enumerate(found):
        last = n == len(found) - 1
        if not piece.unspaced:
            typed = open_end and piece.end == len(text)  # nothing follows it ("100%" is done)
            terms.append(Term(piece.text, prefix=last and typed and len(piece.text) > 1))
        elif len(piece.text) == 1:
            terms.append(Term(piece.text, prefix=last))
        else:
            pairs = bigrams(piece.text)
            terms.extend(Term(t) for t in (pairs[:-1] if last else pairs))
    return terms


# --- highlighting -----------------------------------------------------------------------------

# an index term of a text: (term, start, end, of an unspaced run)
_Spot = tuple[str, int, int, bool]


def _spots(text: str) -> list[_Spot]:
    """Each index term of `text` with the characters it came from."""
    spots: list[_Spot] = []
    for piece in pieces(text):
        if not piece.unspaced:
            spots.append((piece.text, piece.start, piece.end, False))
            continue
        exact = len(piece.text) == piece.end - piece.start  # normalising kept the length
        for i, term in enumerate(bigrams(piece.text)):
            if exact:
                start = piece.start + i
                spots.append((term, start, min(start + len(term), piece.end), True))
            else:
                spots.append((term, piece.start, piece.end, True))
    return spots


def _one_run(terms: list[Term]) -> str | None:
    """The run of an unspaced script that these terms find (its pairs one after the other, or
    one character), if that is what they are."""
    if not all(_UNSPACED.fullmatch(t.text) for t in terms):
        return None
    if len(terms) == 1:
        return terms[0].text
    if all(len(t.text) == 2 for t in terms) and all(
        a.text[1] == b.text[0] for a, b in pairwise(terms)
    ):
        return terms[0].text + "".join(t.text[1] for t in terms[1:])
    return None


def find_phrases(text: str, phrases: list[list[Term]]) -> list[tuple[int, int]]:
    """Where in `text` any of `phrases` stands: sorted, merged (start, end) character spans.
    A prefix highlights what was typed of an unspaced run, and all of a word."""
    spans: list[tuple[int, int]] = []
    rest: list[list[Term]] = []
    normalised: str | None = None
    for terms in phrases:
        run = _one_run(terms) if terms else None
        if run is None:
            rest.append(terms)
            continue
        # a run is found where it stands in the text as normalised (when that kept its length)
        if normalised is None:
            normalised = unicodedata.normalize("NFKC", text)
        if len(normalised) != len(text):
            rest.append(terms)
            continue
        at = normalised.find(run)
        while at >= 0:
            spans.append((at, at + len(run)))
            at = normalised.find(run, at + 1)
    spots = _spots(text) if rest else []
    held = [spot[0] for spot in spots]
    for terms in rest:
        if not terms:
            continue
        first, size = terms[0], len(terms)
        if first.prefix:
            starts = [i for i, t in enumerate(held) if t.startswith(first.text)]
        else:
            starts = [i for i, t in enumerate(held) if t == first.text]
        for i in starts:
            if i + size <= len(held) and all(
                _matches(held[i + k], t) for k, t in enumerate(terms[1:], 1)
            ):
                last = spots[i + size - 1]
                end = last[2]
                if last[3] and terms[-1].prefix:
                    end = min(last[1] + len(terms[-1].text), last[2])
                spans.append((spots[i][1], end))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _matches(held: str, term: Term) -> bool:
    return held.startswith(term.text) if term.prefix else held == term.text
