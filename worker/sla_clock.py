"""The SLA clock's thread: keeps due times in step with the event log and fires warnings and
breaches (imapdesk/domain/sla/clock.py), every `sla_poll_seconds`."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from imapdesk.domain.sla import clock
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

# the consumer's floor moves (and its receipts are dropped) this often
ADVANCE_SECONDS = 60.0
BATCH = 200


class SlaClock:
    def __init__(self, engine: Engine, settings: Settings, stop: threading.Event) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = stop

    def step(self) -> None:
        while clock.handle_events(self.engine, limit=BATCH) == BATCH and not self.stop.is_set():
            pass
        clock.fire_due(self.engine, limit=BATCH)

    def run(self) -> None:
        last_advance = time.monotonic()
        started = False
        while not self.stop.is_set():
            try:
                if not started:
                    clock.start(self.engine)
                    started = True
                self.step()
                if time.monotonic() - last_advance > ADVANCE_SECONDS:
                    clock.advance(self.engine)
                    last_advance = time.monotonic()
            except Exception:
                log.exception("SLA clock: cannot read the event log or fire due times; retrying")
            self.stop.wait(self.settings.sla_poll_seconds)
