"""A webhook receiver on loopback (the standard library's HTTP server in a thread): keeps what
it was sent, answers with a chosen status (after a chosen delay), and can be stopped and
started again on the same port."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from imapdesk.devtools.mailserver import free_port


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, *, status: int = 200, delay: float = 0.0) -> None:
        self.port = free_port()
        self.status = status
        self.delay = delay
        self.received: list[Received] = []
        self.arrived_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    item = Received({k.lower(): v for k, v in self.headers.items()}, body)
                    receiver.received.append(item)
                    receiver.arrived_at.setdefault(item.msg_id, time.monotonic())
                answer = b'{"ok": true}'
                self.send_response(receiver.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def ids(self) -> Counter[str]:
        with self._lock:
            return Counter(r.msg_id for r in self.received)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)
