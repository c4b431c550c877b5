"""Where the repository and the shared mail corpus are."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def find_corpus() -> Path:
    """The shared mail corpus (`../shared/corpus` beside the repository). A clone elsewhere (CI
    clones into a temporary directory) finds it beside the repository it was cloned from;
    IMAPDESK_TEST_CORPUS names it outright."""
    candidates = [REPO.parent / "shared" / "corpus"]
    if os.environ.get("IMAPDESK_TEST_CORPUS"):
        candidates.insert(0, Path(os.environ["IMAPDESK_TEST_CORPUS"]))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        origin = subprocess.run(
            ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if origin and Path(origin).is_dir():
            candidates.append(Path(origin).resolve().parent / "shared" / "corpus")
    return next((c for c in candidates if c.is_dir()), candidates[0])


CORPUS = find_corpus()
