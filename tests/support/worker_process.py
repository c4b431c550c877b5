"""The worker in a child process (forked from a forkserver that has imported it already, so a
start costs milliseconds, not the 2 s of imports), for the kill -9 tests."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

_PRELOAD = [
    "imapdesk.kernel.db",
    "imapdesk.kernel.settings",
    "imapdesk.worker.supervisor",
    "imapdesk.worker.sender",
    "imapdesk.domain.outbound.replies",
]


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, ForkServerContext)
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _run(settings_values: dict[str, Any], env: dict[str, str]) -> None:
    os.environ.update(env)
    from imapdesk.kernel.db import make_engine
    from imapdesk.kernel.settings import Settings
    from imapdesk.worker.supervisor import make_worker

    if env.get("IMAPDESK_TEST_LOG"):
        import logging
        import time

        t0 = time.monotonic()

        class _F(logging.Formatter):
            def format(self, r: logging.LogRecord) -> str:
                return f"{time.monotonic() - t0:6.3f} {r.threadName} {r.getMessage()}"

        h = logging.StreamHandler()
        h.setFormatter(_F())
        logging.basicConfig(level=logging.INFO, handlers=[h])
    settings = Settings(**settings_values)
    engine = make_engine(settings.database_url)
    stop = threading.Event()
    make_worker(settings, engine, stop).run()


def start_worker_process(settings_values: dict[str, Any], env: dict[str, str]) -> BaseProcess:
    process = _context().Process(target=_run, args=(settings_values, env), daemon=True)
    process.start()
    return process
