"""Attachment storage: content-addressed files, `<root>/<sha256[:2]>/<sha256>`.

The same bytes are stored once however many messages carry them. Files are written to a
temporary name and renamed into place, so a reader never sees a partial file and two writers
of the same blob cannot corrupt it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

__all__ = ["blob_path", "store_blob"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def blob_path(root: Path, sha256: str) -> Path:
    """Where the blob with this digest lives. Refuses anything but a lower-case hex SHA-256,
    so a digest taken from a request can never point outside `root`."""
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return Path(root) / sha256[:2] / sha256


def store_blob(root: Path, data: bytes, *, fsync: bool = False) -> str:
    """Store bytes under their SHA-256 and return the hex digest. Idempotent: a blob already
    present is not rewritten (unless its size is wrong, e.g. a file truncated by a crash).

    `fsync` makes the write durable before returning; off by default because ingest writes many
    blobs per second and the rename already guarantees readers see whole files.
    """
    digest = hashlib.sha256(data).hexdigest()
    path = blob_path(root, digest)
    try:
        if path.stat().st_size == len(data):
            # touched: what cleans up unused blobs leaves a file stored again lately alone
            # (imapdesk/domain/outbound/images.py, remove_unused_blob)
            with contextlib.suppress(OSError):
                os.utime(path)
            return digest
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            if fsync:
                tmp.flush()
                os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return digest
