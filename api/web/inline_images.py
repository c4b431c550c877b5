"""A message's text with its inline images shown where the text refers to them, and those it
does not refer to after it: a screenshot is seen without opening the formatted version.

The images come from the attachments route (same origin, so the pages' CSP lets them in); only
raster types a browser shows as pictures, never SVG (a document of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from imapdesk.kernel.models import Attachment
from imapdesk.mail.inline_images import InlineImage, place_images

SHOWN_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})


@dataclass(frozen=True)
class MessageText:
    # text, and the attachments (images) to show in its place
    pieces: list[str | Attachment] = field(default_factory=list)
    # inline images the text does not refer to
    after: list[Attachment] = field(default_factory=list)


def inline_body(text: str, attachments: Sequence[Attachment]) -> MessageText:
    images = {
        a.id: a for a in attachments if a.id is not None and a.content_type.lower() in SHOWN_TYPES
    }
    found = [InlineImage(key, a.content_id, a.filename) for key, a in images.items()]
    pieces, placed = place_images(text, found)
    shown: list[str | Attachment] = []
    for n, piece in enumerate(pieces):
        if not isinstance(piece, str):
            shown.append(images[piece.key])
            continue
        # an image is a block of its own: the line ends around its placeholder go with it
        if n > 0 and piece.startswith("\n"):
            piece = piece[1:]
        if n < len(pieces) - 1 and piece.endswith("\n"):
            piece = piece[:-1]
        if piece:
            shown.append(piece)
    return MessageText(
        pieces=shown, after=[a for key, a in images.items() if a.inline and key not in placed]
    )
