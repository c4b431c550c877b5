"""Parsing on another core while this one fetches and stores (the initial sync's pipeline)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from imapdesk.mail.parsing import ParsedMessage, parse_message

log = logging.getLogger(__name__)


def parse_all(raws: Sequence[bytes]) -> list[ParsedMessage]:
    return [parse_message(raw) for raw in raws]


def default_parse_processes() -> int:
    """One less than the cores this process may use (none on a single core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, 4))


class Parser:
    """Parses batches in a process pool; inline when it has no processes or the pool broke."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.processes <= 0:
            return None
        if self._pool is None:
            # spawn: forking a process that runs threads (IDLE loops) is unsafe, and a
            # forkserver would cost one more process
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def submit(self, raws: list[bytes]) -> Future[list[ParsedMessage]]:
        executor = self._executor()
        if executor is not None and len(raws) > 1:
            try:
                return executor.submit(parse_all, raws)
            except (BrokenProcessPool, RuntimeError):
                log.warning("the parser processes stopped; parsing in the worker process")
                self._pool = None
        done: Future[list[ParsedMessage]] = Future()
        done.set_result(parse_all(raws))
        return done

    def result(self, future: Future[list[ParsedMessage]], raws: list[bytes]) -> list[ParsedMessage]:
        try:
            return future.result()
        except BrokenProcessPool:
            log.warning("a parser process died; parsing this batch in the worker process")
            self._pool = None
            return parse_all(raws)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
