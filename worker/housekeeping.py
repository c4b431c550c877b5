"""The worker's housekeeping: what nobody needs any more, removed now and then from the
worker's main loop (worker/supervisor.py).

- Images pasted into the composer and never sent (`imapdesk.domain.outbound.images.prune`):
  once `IMAPDESK_COMPOSE_IMAGE_MAX_AGE_HOURS` old and shown by no draft and no unsent reply,
  their rows and (when nothing else uses the bytes) their files.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.domain.outbound import images
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

# how often it runs at most (the first time: when the worker starts)
EVERY_SECONDS = 600.0


class Housekeeping:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._last: float | None = None

    def maybe_run(self) -> None:
        """Run when it is due; a failure is logged and tried again next time."""
        if self._last is not None and time.monotonic() - self._last < EVERY_SECONDS:
            return
        self._last = time.monotonic()
        try:
            self.run()
        except Exception:
            log.exception("housekeeping failed; trying again later")

    def run(self) -> tuple[int, int]:
        """One pass: how many pasted images were removed, and how many of their files."""
        rows = files = 0
        while True:
            with unit_of_work(self.engine) as db:
                digests = images.prune(db, self.settings)
                rows_now = len(digests)
            if not digests:
                break
            rows += rows_now
            with Session(self.engine) as db:
                for digest in sorted(set(digests)):
                    files += images.remove_unused_blob(db, self.settings, digest)
            if rows_now < images.PRUNE_BATCH:
                break
        if rows:
            log.info("housekeeping: %d pasted images never sent removed (%d files)", rows, files)
        return rows, files
