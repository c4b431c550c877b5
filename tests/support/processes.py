"""imapdesk's long-running commands (`imapdesk run`, `imapdesk demo`) as child processes: their
output read as it comes, waiting until they answer over HTTP, Ctrl-C; and the demo's fixed
ports, taken by one demo at a time."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

# the demo's mail server and SMTP relay listen on fixed ports (imapdesk/devtools/demo.py): one
# demo at a time on this machine, whichever test run or worker starts it
DEMO_PORTS_LOCK = Path(tempfile.gettempdir()) / "imapdesk-demo-ports.lock"
# a request to a just-started server: its first pages (templates compiled, modules imported on
# first use) took more than httpx's default 5 s beside another copy of the suite
REQUEST_TIMEOUT = 60.0


@contextmanager
def demo_ports() -> Iterator[None]:
    """Held while a test runs `imapdesk demo` (waits while another test's demo runs)."""
    with DEMO_PORTS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class ImapdeskProcess:
    """A command run with its standard output and error read, merged, into `lines`."""

    def __init__(self, command: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, prefix: str, deadline: float) -> str:
        """The first line that starts with `prefix`, once the process has written it."""
        while True:
            found = next((line for line in self.lines if line.startswith(prefix)), None)
            if found is not None:
                return found
            assert self.process.poll() is None, self.output
            assert time.monotonic() < deadline, f"no line {prefix!r}... yet:\n{self.output}"
            time.sleep(0.2)

    def get_when_up(self, client: httpx.Client, path: str, deadline: float) -> httpx.Response:
        """GET `path` once the server accepts connections (it binds its port after start-up)."""
        while True:
            try:
                return client.get(path)
            except httpx.TransportError:
                assert self.process.poll() is None, self.output
                assert time.monotonic() < deadline, f"{path} does not answer:\n{self.output}"
                time.sleep(0.2)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, and its exit code once it has stopped (killed if it does not)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"did not stop on Ctrl-C:\n{self.output}") from None
        self._reader.join(10)
        return self.process.returncode
