"""The automation rules in the worker: a thread that hands the event log to the rules and
fires the time-based rules (imapdesk/domain/rules/engine.py), each step one unit of work.

Every `rules_poll_seconds` it takes the pending events (a batch per transaction, the events'
receipts written with what the rules did; a read first, so that an idle log takes no write
lock) and, every `TIME_RULES_POLLS` polls, the time-based rules (if there are any; each fires
once per conversation and episode of waiting, its firing committed with its actions); now and
then it moves the consumer's floor on (imapdesk/domain/events.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from imapdesk.domain.events import advance_floor
from imapdesk.domain.rules.definitions import TIME_TRIGGERS
from imapdesk.domain.rules.engine import CONSUMER, enabled_rules, run_events, run_time_rules
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.models import Event
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

# the time-based rules are looked at every this many polls
TIME_RULES_POLLS = 5
FLOOR_SECONDS = 60.0
FULL_LOOK_SECONDS = 5.0
# tests: die (SIGKILL) after the rules acted, before the commit (kill -9 at the worst moment)
CRASH_ENV = "IMAPDESK_TEST_RULES_CRASH"


class RulesLoop:
    def __init__(self, engine: Engine, settings: Settings, stop: threading.Event) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = stop
        self._crash = os.environ.get(CRASH_ENV, "")
        self._newest_seen = -1
        self._next_full_look = 0.0

    def _maybe_crash(self, point: str, did: int) -> None:
        if did and self._crash == point:
            os.kill(os.getpid(), signal.SIGKILL)

    def _news(self) -> bool:
        """Whether the log has grown since the last look (a read: on SQLite the write lock is
        taken only when there is work). Every `FULL_LOOK_SECONDS` a full look all the same,
        for an event committed after a later one (ids are handed out before commit)."""
        with Session(self.engine) as db:
            newest = int(db.exec(select(func.max(Event.id))).one() or 0)
        now = time.monotonic()
        if newest != self._newest_seen or now >= self._next_full_look:
            self._newest_seen = newest
            self._next_full_look = now + FULL_LOOK_SECONDS
            return True
        return False

    def step_events(self) -> int:
        with unit_of_work(self.engine) as db:
            did = run_events(db, self.settings)
            self._maybe_crash("events", did)
        if did:
            self._newest_seen = -1  # what the rules did is news too
        return did

    def step_time(self) -> int:
        with Session(self.engine) as db:
            if not any(r.trigger in TIME_TRIGGERS for r in enabled_rules(db)):
                return 0
        with unit_of_work(self.engine) as db:
            did = run_time_rules(db, self.settings)
            self._maybe_crash("time", did)
            return did

    def run(self) -> None:
        next_time = 0.0
        next_floor = time.monotonic() + FLOOR_SECONDS
        while not self.stop.is_set():
            try:
                if self._news():
                    while self.step_events() and not self.stop.is_set():
                        pass
                now = time.monotonic()
                if now >= next_time:
                    self.step_time()
                    next_time = now + TIME_RULES_POLLS * self.settings.rules_poll_seconds
                if now >= next_floor:
                    with unit_of_work(self.engine) as db:
                        advance_floor(db, CONSUMER)
                    next_floor = now + FLOOR_SECONDS
            except Exception:
                log.exception("automation rules failed; trying again")
                self.stop.wait(1.0)
            self.stop.wait(self.settings.rules_poll_seconds)
