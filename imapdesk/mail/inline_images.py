"""Where a message's plain text shows its inline images.

Mail clients write a placeholder into the plain-text version of a message where its HTML shows
an image of its own: Outlook `[cid:image001.png@01D9C0A1.2B3C4D50]` (some languages put a word
before it: `[Description: cid:...]`), Gmail `[image: screenshot.png]`. The placeholder names
the image by its Content-ID or its file name; Apple Mail and Thunderbird write none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_MARKER = re.compile(
    r"\[(?:[^\[\]\n:]{1,40}:\s*)*(?:cid:(?P<cid>[^\]\s]{1,500})|image:\s*(?P<name>[^\]\n]{1,255}))\]",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class InlineImage:
    """An image of the message that its text may show: `key` identifies it to the caller."""

    key: int
    content_id: str | None
    filename: str


def place_images(
    text: str, images: Sequence[InlineImage]
) -> tuple[list[str | InlineImage], set[int]]:
    """The text in pieces, each placeholder that names one of `images` replaced by it; and
    the keys of the images placed. Placeholders naming none stay as text."""
    if not images or "[" not in text:
        return [text] if text else [], set()
    by_cid = {i.content_id.strip("<>").lower(): i for i in images if i.content_id}
    by_name = {i.filename.casefold(): i for i in images if i.filename}
    pieces: list[str | InlineImage] = []
    placed: set[int] = set()
    start = 0
    for match in _MARKER.finditer(text):
        cid, name = match.group("cid"), match.group("name")
        image = by_cid.get(cid.strip("<>").lower()) if cid else by_name.get(name.strip().casefold())
        if image is None:
            continue
        if match.start() > start:
            pieces.append(text[start : match.start()])
        pieces.append(image)
        placed.add(image.key)
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces, placed
