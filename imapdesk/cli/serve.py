"""`imapdesk serve`, `imapdesk run` and `imapdesk worker`: the long-running processes, and the
machinery they share with `imapdesk demo` (the worker in a thread, the web server)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from imapdesk.cli.terminal import console, setup_logging
from imapdesk.kernel.settings import get_settings

Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def start_worker(stop: threading.Event, *, progress: bool) -> threading.Thread:
    """The worker in a thread until `stop` is set; `progress`: a bar per folder on a terminal.
    It has database connections of its own: beside the API (`imapdesk run`), the requests'
    turns at the API's connections (api/capacity.py) count exactly what they share."""
    from imapdesk.kernel.db import make_engine
    from imapdesk.worker.progress import ProgressDisplay
    from imapdesk.worker.supervisor import make_worker

    settings = get_settings()
    display = ProgressDisplay(console) if progress and console.is_terminal else None
    worker = make_worker(
        settings,
        make_engine(settings.database_url, settings=settings),
        stop,
        progress=display.update if display else None,
    )
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    return thread


def web_server(app: Any, host: str, port: int) -> Any:
    """A uvicorn server that, on SIGINT/SIGTERM, returns instead of re-raising the signal, so
    the caller's clean-up (stop the worker, stop the demo's Dovecot) runs. As it stops it ends
    the app's live streams first (`begin_shutdown`): they would otherwise hold its graceful
    wait to the end, and the process's exit with it."""
    import uvicorn

    from imapdesk.api.app import begin_shutdown
    from imapdesk.api.limits import server_options

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # no new connection first, so that the pages reconnect to the next server
            for server in self.servers:
                server.close()
            begin_shutdown(app)
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
        # the request limits the app cannot see: headers' size and time, keep-alive
        **server_options(get_settings()),
    )
    return Server(config)


def serve_until_stopped(*, host: str, port: int, with_worker: bool) -> None:
    """The REST API and the web UI on host:port (and, `with_worker`, the worker in a thread)
    until SIGINT or SIGTERM; the worker is stopped before this returns."""
    from imapdesk.api.app import create_app, settle_after_start
    from imapdesk.kernel.db import upgrade_database

    upgrade_database()
    stop = threading.Event()
    worker_thread = start_worker(stop, progress=True) if with_worker else None
    try:
        server = web_server(create_app(), host, port)
        settle_after_start()
        server.run()
    finally:
        stop.set()
        if worker_thread is not None:
            worker_thread.join(timeout=10)


def worker(verbose: Verbose = False) -> None:
    """Watch the mailboxes (IMAP IDLE) and take mail into the database."""
    from imapdesk.kernel.db import upgrade_database

    setup_logging(verbose)
    upgrade_database()
    stop = threading.Event()
    _stop_on_signals(stop)
    thread = start_worker(stop, progress=True)
    while thread.is_alive():
        thread.join(0.5)


def serve(verbose: Verbose = False) -> None:
    """Run the REST API and the web UI."""
    setup_logging(verbose)
    settings = get_settings()
    serve_until_stopped(host=settings.host, port=settings.port, with_worker=False)


def run(verbose: Verbose = False) -> None:
    """API, web UI and worker in one process: the small-install default."""
    setup_logging(verbose)
    settings = get_settings()
    serve_until_stopped(host=settings.host, port=settings.port, with_worker=True)
