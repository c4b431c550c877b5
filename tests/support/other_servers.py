"""Cyrus IMAP and Courier-IMAP as Debian ships them, run from their unpacked packages.

Installing `cyrus-imapd` or `courier-imap` with apt would remove Dovecot's IMAP (all of them
provide `imap-server`), so their `.deb` files are fetched with `apt-get download`, unpacked with
`dpkg -x` into a cache under the checkout's `.run/other-imap/` (one tree per set of package
versions, reused by every later run) and started from there. The libraries they link that
conflict with nothing are installed with apt by `scripts/bootstrap.sh --with-other-imap`.

Each instance keeps its configuration, mail, users, sockets, TLS files and logs in a directory
of its own (in the temp dir), listens on 127.0.0.1 on free ports (IMAP with STARTTLS, and
IMAPS with a certificate for `localhost` signed by the instance's own CA, `ca_file`), and keeps
the Debian defaults that matter to a client:

- Cyrus 3.6 (`/etc/imapd.conf`): `altnamespace: no`, `unixhierarchysep: no` (every folder
  under `INBOX.`, `.` between levels), no `idled` (IDLE reports news when it polls, every
  `imapidlepoll` = 60 s), 128 user flags per folder of which clients may create 100, INBOX
  created at the first login. Changed: `virtdomains: userid` (logins as `user@domain`, as
  multi-domain hosts run it), passwords in a sasldb of the instance, and with `special_use`
  the folders a provider creates for every account (`autocreate_inbox_folders` with their
  RFC 6154 uses).
- Courier-IMAP 5 (`/etc/courier/imapd`, `imapd-ssl`): Maildir++, `INBOX.` and `.`,
  `IMAP_ENHANCEDIDLE=0` (IDLE polls every `IMAP_IDLE_TIMEOUT` = 60 s), no SPECIAL-USE, no
  MOVE, no CONDSTORE. A new account gets `initial_folders` (Drafts, Sent, Trash, Junk, as a
  host's webmail makes them). Changed: users in a userdb of the instance (`authuserdb`). Courier's
  authentication library reaches its daemon and configuration at fixed paths
  (`/run/courier/authdaemon/socket`, `/etc/courier`, `/usr/lib/courier-authlib`), so an
  instance runs in a mount namespace of its own (`unshare`; root, or unprivileged user
  namespaces) where those paths are the instance's and the unpacked tree's; nothing outside
  the namespace changes.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import email.utils
import fcntl
import grp
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

from imapclient import IMAPClient

from imapdesk.devtools.certificates import write_local_certificate
from imapdesk.devtools.mailserver import (
    LocalMailServerError,
    MailAccount,
    SeedMessage,
    ensure_traversable,
    free_port,
    make_base_dir,
)

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CACHE_ROOT = REPO / ".run" / "other-imap"
BOOTSTRAP_HINT = "run `scripts/bootstrap.sh --with-other-imap`"

# What each server is unpacked from (the packages' own files; no maintainer script runs).
CYRUS_PACKAGES = ("cyrus-common", "cyrus-imapd", "sasl2-bin")
COURIER_PACKAGES = (
    "courier-imap",
    "courier-base",
    "courier-authdaemon",
    "courier-authlib",
    "courier-authlib-userdb",
)
# The libraries those programs link that Debian 12 does not install by default, and that
# conflict with nothing (installed with apt by scripts/bootstrap.sh --with-other-imap, whose
# `other_imap_libs` names the same).
RUNTIME_LIBRARIES = (
    "libcourier-unicode4",
    "libgamin0",
    "libical3",
    "libidn12",
    "libltdl7",
    "libpcre3",
    "libxapian30",
    "libsasl2-modules",
    "libsasl2-modules-db",
)
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


class OtherServerError(LocalMailServerError):
    """A Cyrus or Courier test server could not be fetched, set up, started or stopped."""

    code = "other_imap_server_error"


# -- the unpacked packages ------------------------------------------------------------------------


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise OtherServerError(f"`{cmd[0]}` is not installed: {BOOTSTRAP_HINT}") from exc
    if done.returncode != 0:
        raise OtherServerError(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return done.stdout


def candidate_versions(packages: Sequence[str]) -> dict[str, str]:
    """The version apt would fetch of each package (empty when apt knows none)."""
    out = _run(["apt-cache", "policy", *packages], timeout=60)
    found: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif line.strip().startswith("Candidate:") and current:
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                found[current] = version
    return found


class DebianTree:
    """Packages unpacked into one directory (`root`), as `dpkg -x` leaves them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path / "root"
        manifest = json.loads((path / "manifest.json").read_text())
        self.packages: dict[str, str] = manifest["packages"]
        self.installed_bytes: int = manifest["installed_bytes"]
        self.deb_bytes: int = manifest["deb_bytes"]

    def __repr__(self) -> str:
        return f"DebianTree({str(self.path)!r}, {self.packages})"

    def describe(self) -> str:
        pkgs = " ".join(f"{name}={version}" for name, version in sorted(self.packages.items()))
        return (
            f"{pkgs}; .deb files {self.deb_bytes / 1e6:.1f} MB, "
            f"unpacked {self.installed_bytes / 1e6:.1f} MB"
        )


APT_LISTS = Path("/var/lib/apt/lists")


def _lists_changed_at() -> float:
    """When apt's package lists last changed (`apt-get update`); 0 without any."""
    return max((p.stat().st_mtime for p in APT_LISTS.glob("*_Packages*")), default=0.0)


def unpacked(name: str, packages: Sequence[str], *, cache: Path = CACHE_ROOT) -> DebianTree:
    """The packages' candidate versions unpacked in the cache, fetched when missing.

    Asking apt for the candidates takes a second or two, so it is asked only when its package
    lists changed since the last answer (`<name>.json` remembers which tree that gave).
    Several test processes may ask at once: one fetches under a lock, the others wait for it.
    Without apt (or its package lists) the tree already in the cache is used.
    """
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(cache.stat().st_mode | 0o755)
    pointer = cache / f"{name}.json"
    current = _current_tree(pointer)
    if current is not None and _lists_changed_at() <= current[1]:
        return current[0]
    with (cache / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _current_tree(pointer)  # another process may have done it meanwhile
        if current is not None and _lists_changed_at() <= current[1]:
            return current[0]
        checked = time.time()
        try:
            versions = candidate_versions(packages)
        except OtherServerError:
            versions = {}
        if set(versions) != set(packages):
            if current is not None:
                return current[0]
            missing = sorted(set(packages) - set(versions))
            raise OtherServerError(
                f"apt knows no version of {', '.join(missing)} (no package lists?): "
                f"run `apt-get update`, or {BOOTSTRAP_HINT}"
            )
        key = hashlib.sha256(json.dumps(sorted(versions.items())).encode()).hexdigest()[:12]
        path = cache / f"{name}-{key}"
        if not (path / "manifest.json").is_file():
            _fetch(path, versions)
        pointer.write_text(json.dumps({"tree": path.name, "checked": checked}) + "\n")
    return DebianTree(path)


def _current_tree(pointer: Path) -> tuple[DebianTree, float] | None:
    try:
        data = json.loads(pointer.read_text())
        return DebianTree(pointer.parent / data["tree"]), float(data["checked"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fetch(path: Path, versions: dict[str, str]) -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        debs = work / "debs"
        debs.mkdir()
        debs.chmod(0o777)  # apt's download sandbox user (_apt) writes here
        _run(
            ["apt-get", "download", "-q", *(f"{p}={v}" for p, v in sorted(versions.items()))],
            cwd=debs,
        )
        root = work / "root"
        root.mkdir()
        files = sorted(debs.glob("*.deb"))
        if len(files) != len(versions):
            raise OtherServerError(f"apt-get download left {len(files)} files in {debs}")
        for deb in files:
            _run(["dpkg-deb", "-x", str(deb), str(root)])
        installed = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        manifest = {
            "packages": versions,
            "deb_bytes": sum(f.stat().st_size for f in files),
            "installed_bytes": installed,
            "fetched": dt.datetime.now(dt.UTC).isoformat(),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        work.chmod(0o755)
        if path.exists():
            shutil.rmtree(path)
        os.replace(work, path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("unpacked %s into %s in %.1f s", versions, path, time.monotonic() - started)


def _check_libraries(tree: DebianTree, binaries: Iterable[Path], library_path: str) -> None:
    """Refuse with the fix when a program of the tree links a library that is not installed."""
    missing: set[str] = set()
    env = {**os.environ, "LD_LIBRARY_PATH": library_path}
    for binary in binaries:
        out = subprocess.run(
            ["ldd", str(binary)], capture_output=True, text=True, env=env, check=False
        ).stdout
        missing |= {line.split()[0] for line in out.splitlines() if "not found" in line}
    if missing:
        raise OtherServerError(
            f"the programs of {tree.path.name} need {', '.join(sorted(missing))}, which are not "
            f"installed: {BOOTSTRAP_HINT} (apt-get install {' '.join(RUNTIME_LIBRARIES)})"
        )


# -- TLS ------------------------------------------------------------------------------------------


def make_certificate(tls_dir: Path, name: str) -> None:
    """`ca.pem`, and `server.pem` + `server.key` for localhost and 127.0.0.1 signed by it."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    write_local_certificate(
        ca_path=tls_dir / "ca.pem",
        cert_path=tls_dir / "server.pem",
        key_path=tls_dir / "server.key",
        ca_name=f"imapdesk test CA {name}",
        days=30,
    )


# -- the common part ------------------------------------------------------------------------------


def _date_of(raw: bytes) -> dt.datetime | None:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.decode("ascii", "replace").splitlines():
        if line.lower().startswith("date:"):
            with contextlib.suppress(TypeError, ValueError, IndexError):
                return email.utils.parsedate_to_datetime(line[5:].strip())
    return None


class OtherImapServer:
    """A started-on-demand IMAP server of another make on 127.0.0.1, shaped like
    `LocalMailServer` where tests use it: `create_account`, `account`, `connect`, `seed`,
    `folder`, `namespace_prefix`, `separator`, `ca_file`, `imap_port`, `imaps_port`."""

    host = "127.0.0.1"
    kind: ClassVar[str] = ""
    namespace_prefix = "INBOX."
    separator = "."
    # how a connection is greeted once the server answers
    greeting = b"* OK"
    # the capabilities of a full server (Dovecot) this one lacks, under the name the tests
    # read for a Dovecot trimmed of them (`tests/support/mapping.has_move`)
    trim_capabilities: ClassVar[tuple[str, ...]] = ()
    # what the started process gets when the test process ends without stopping it (killed,
    # or an interrupted pytest-xdist worker): it stops, and what it started with it
    death_signal: ClassVar[int] = signal.SIGTERM
    # folders a new account gets (under the prefix) besides INBOX, made over IMAP
    initial_folders: tuple[str, ...] = ()

    def __init__(self, tree: DebianTree, base_dir: Path, imap_port: int, imaps_port: int) -> None:
        self.tree = tree
        self.base_dir = Path(base_dir).absolute()
        self.imap_port = imap_port
        self.imaps_port = imaps_port
        self.tls_dir = self.base_dir / "tls"
        self.ca_file = self.tls_dir / "ca.pem"
        self.log_path = self.base_dir / f"{self.kind}.log"
        self._users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        for path in (self.base_dir, tree.path):
            bad = sorted(set(str(path)) & set(" \t\n,:=\"'\\$"))
            if bad:
                raise OtherServerError(f"{path} holds characters the configuration cannot: {bad}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.base_dir)!r}, imap_port={self.imap_port}, "
            f"imaps_port={self.imaps_port})"
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Prepare the instance and start it; returns once both ports greet."""
        started = time.monotonic()
        self._prepare()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=self.base_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.death_signal),
                **self._credentials(),
            )
        deadline = started + timeout
        while not (self._greets(self.imap_port) and self._greets(self.imaps_port, tls=True)):
            problem = ""
            if self._process.poll() is not None:
                problem = f"{self.kind} exited (status {self._process.returncode}) at start"
            elif time.monotonic() > deadline:
                problem = f"{self.kind} did not greet on ports {self.imap_port}, "
                problem += f"{self.imaps_port} within {timeout} s"
            if problem:
                self.stop()
                raise OtherServerError(
                    f"{problem}; {self.log_path}:\n{self.log_tail(log_offset) or '(empty)'}"
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started
        logger.info("%s started in %.2f s: %r", self.kind, self.start_seconds, self)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop the server and every process it started (its own process group)."""
        proc = self._process
        if proc is None:
            return
        self._process = None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._signal_stop(proc)
            if not _exited_unreaped(proc.pid, timeout):
                logger.warning("%s did not stop in %s s: killing it", self.kind, timeout)
            # what is left of the session it was started in, while its unreaped leader keeps
            # the group's id from being given to anyone else
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, offset: int = 0, lines: int = 40) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _greets(self, port: int, *, tls: bool = False) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=2) as sock:
                if tls:
                    context = self.ssl_context()
                    with context.wrap_socket(sock, server_hostname="localhost") as wrapped:
                        return wrapped.recv(256).startswith(self.greeting)
                return sock.recv(256).startswith(self.greeting)
        except (OSError, ssl.SSLError):
            return False

    # -- users and clients ----------------------------------------------------------------------
    def create_account(self, prefix: str = "box", domain: str = "example.test") -> MailAccount:
        """A new user (`box-<hex>@example.test`) with a random password."""
        user = self.add_user(f"{prefix}-{secrets.token_hex(4)}@{domain}", secrets.token_hex(12))
        return self.account(user)

    def add_user(self, user: str, password: str) -> str:
        name = user.strip().lower()
        local, _, domain = name.partition("@")
        if not local or not domain or not all(c.isalnum() or c in "-_" for c in local):
            raise OtherServerError(f"{user!r}: use a name like box-1@example.test")
        if not password or any(c in password for c in "|\r\n\0\t"):
            raise OtherServerError("a password must be non-empty, without | or control characters")
        self._add_user(name, password)
        self._users[name] = password
        if self.initial_folders:
            client = self.connect(name, password)
            try:
                for folder in self.initial_folders:
                    client.create_folder(self.folder(folder))
                    client.subscribe_folder(self.folder(folder))
            finally:
                with contextlib.suppress(Exception):
                    client.logout()
        return name

    def account(self, user: str, password: str | None = None) -> MailAccount:
        name = user.strip().lower()
        secret = password if password is not None else self._users.get(name)
        if secret is None:
            raise OtherServerError(f"no user {name} on {self!r}")
        # MailAccount's `server` is used for `connect` and `seed`, which this class has too
        server = cast(Any, self)
        return MailAccount(
            name, secret, self.host, self.imap_port, self.imaps_port, self.ca_file, server
        )

    def folder(self, name: str) -> str:
        """The full name of `Sent` or `Projects/2024` (`/` between levels) on this server."""
        if name.upper() == "INBOX" or name.startswith(self.namespace_prefix):
            return name if name.upper() != "INBOX" else "INBOX"
        return self.namespace_prefix + name.replace("/", self.separator)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def connect(
        self,
        user: str,
        password: str,
        ssl: bool = False,
        *,
        starttls: bool = False,
        host: str | None = None,
        timeout: float = 30.0,
    ) -> IMAPClient:
        """A logged-in IMAPClient: plain by default, IMAPS with `ssl`, or with STARTTLS."""
        port = self.imaps_port if ssl else self.imap_port
        context = self.ssl_context() if ssl or starttls else None
        client = IMAPClient(
            host or "localhost", port=port, ssl=ssl, ssl_context=context, timeout=timeout
        )
        try:
            if starttls:
                client.starttls(context)
            client.login(user, password)
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def seed(
        self,
        user: str,
        password: str,
        folder: str,
        messages: Iterable[bytes | SeedMessage],
        flags: Sequence[str] = (),
        batch: int = 200,
        *,
        date_from_header: bool = True,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """APPEND the messages to `folder` (named as by `folder()`), created when missing."""
        name = self.folder(folder)
        total = 0
        client = self.connect(user, password)
        try:
            if not client.folder_exists(name):
                client.create_folder(name)
                client.subscribe_folder(name)
            for item in messages:
                msg = item if isinstance(item, SeedMessage) else SeedMessage(item)
                date = msg.internal_date or (_date_of(msg.raw) if date_from_header else None)
                all_flags = list(dict.fromkeys([*flags, *msg.flags]))
                client.append(name, msg.raw, all_flags, date)
                total += 1
                if on_progress is not None and total % batch == 0:
                    on_progress(batch)
        finally:
            with contextlib.suppress(Exception):
                client.logout()
        if on_progress is not None and total % batch:
            on_progress(total % batch)
        return total

    def deliver(self, recipient: str, message: bytes, sender: str = "sender@example.test") -> None:
        """Deliver one message to INBOX as the MTA would (it arrives unseen)."""
        raise NotImplementedError

    # -- what each server does its own way ------------------------------------------------------
    def _signal_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Ask the started process to stop itself and all it started."""
        proc.terminate()

    def _credentials(self) -> dict[str, Any]:
        """Who the started process runs as (`subprocess.Popen`'s user, group, extra_groups)."""
        return {}

    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

    def _add_user(self, name: str, password: str) -> None:
        raise NotImplementedError


_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    """For `preexec_fn`: the child gets `sig` when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork

    def arrange() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return arrange


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait until the child `pid` has exited, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if done is not None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _run_as() -> tuple[str, str, int, int]:
    """Who the server's mail processes run as: `nobody` under root, else the current user."""
    entry = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(entry.pw_gid).gr_name
    return entry.pw_name, group, entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    os.chown(path, uid, gid)
    for directory, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            os.chown(os.path.join(directory, entry), uid, gid)


# -- Cyrus ----------------------------------------------------------------------------------------

# Providers create these for every account; their RFC 6154 uses (`xlist-<use>` options).
CYRUS_SPECIAL_USE = (
    ("Drafts", "drafts"),
    ("Sent", "sent"),
    ("Trash", "trash"),
    ("Junk", "junk"),
    ("Archive", "archive"),
)


class CyrusServer(OtherImapServer):
    """Cyrus IMAP 3.6 (Debian's `cyrus-imapd`) run by its `master` from the unpacked tree."""

    kind = "cyrus"

    def __init__(
        self,
        tree: DebianTree,
        base_dir: Path,
        imap_port: int,
        imaps_port: int,
        *,
        special_use: bool = True,
    ) -> None:
        super().__init__(tree, base_dir, imap_port, imaps_port)
        self.special_use = special_use
        self.bin_dir = tree.root / "usr/lib/cyrus/bin"
        self.lib_dir = tree.root / "usr/lib/x86_64-linux-gnu"
        self.config_path = self.base_dir / "imapd.conf"
        self.master_config = self.base_dir / "cyrus.conf"
        self.sasldb = self.base_dir / "sasldb2"
        self.lmtp_socket = self.base_dir / "run/socket/lmtp"
        self.user, self.group, self.uid, self.gid = _run_as()

    def config_text(self) -> str:
        b = self.base_dir
        lines = [
            # as Debian's /etc/imapd.conf
            f"configdirectory: {b}/lib",
            f"proc_path: {b}/run/proc",
            f"mboxname_lockpath: {b}/run/lock",
            "defaultpartition: default",
            f"partition-default: {b}/spool",
            "altnamespace: no",
            "unixhierarchysep: no",
            "lmtp_downcase_rcpt: yes",
            "allowanonymouslogin: no",
            "popminpoll: 1",
            "autocreate_quota: 0",
            "umask: 077",
            "sieveusehomedir: false",
            f"sievedir: {b}/sieve",
            "hashimapspool: true",
            "allowplaintext: yes",
            "sasl_pwcheck_method: auxprop",
            "sasl_auto_transition: no",
            "tls_client_ca_dir: /etc/ssl/certs",
            "tls_session_timeout: 1440",
            f"lmtpsocket: {self.lmtp_socket}",
            f"idlesocket: {b}/run/socket/idle",
            f"notifysocket: {b}/run/socket/notify",
            f"syslog_prefix: imapdesk-cyrus-{self.imap_port}",
            # this instance's own
            "servername: localhost",
            "virtdomains: userid",
            "sasl_auxprop_plugin: sasldb",
            f"sasl_sasldb_path: {self.sasldb}",
            f"tls_server_cert: {self.tls_dir}/server.pem",
            f"tls_server_key: {self.tls_dir}/server.key",
            f"cyrus_user: {self.user}",
            f"cyrus_group: {self.group}",
        ]
        if self.special_use:
            names = " | ".join(name for name, _use in CYRUS_SPECIAL_USE)
            lines += [
                f"autocreate_inbox_folders: {names}",
                f"autocreate_subscribe_folders: {names}",
                *(f"xlist-{use}: {name}" for name, use in CYRUS_SPECIAL_USE),
            ]
        return "\n".join(lines) + "\n"

    def master_config_text(self) -> str:
        c = f"-C {self.config_path}"
        b = self.bin_dir
        return f"""START {{
  recover cmd="{b}/ctl_cyrusdb {c} -r"
}}
SERVICES {{
  imap cmd="{b}/imapd {c} -U 30" listen="{self.host}:{self.imap_port}" prefork=0 maxchild=100
  imaps cmd="{b}/imapd {c} -s -U 30" listen="{self.host}:{self.imaps_port}" prefork=0 maxchild=100
  lmtpunix cmd="{b}/lmtpd {c}" listen="{self.lmtp_socket}" prefork=0 maxchild=20
}}
EVENTS {{
  checkpoint cmd="{b}/ctl_cyrusdb {c} -c" period=30
}}
"""

    def _prepare(self) -> None:
        _check_libraries(
            self.tree,
            [
                self.bin_dir / "master",
                self.bin_dir / "imapd",
                self.tree.root / "usr/sbin/saslpasswd2",
            ],
            str(self.lib_dir),
        )
        for sub in ("lib", "spool", "sieve", "run/proc", "run/lock", "run/socket"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # started as `cyrus_user` (`_credentials`): it must reach its programs and its files
            for path in (self.bin_dir / "master", self.base_dir):
                ensure_traversable(path, self.user, "Cyrus runs its processes")
        if not self.ca_file.exists():
            make_certificate(self.tls_dir, f"cyrus {self.imap_port}")
        self.config_path.write_text(self.config_text())
        self.master_config.write_text(self.master_config_text())
        _chown_tree(self.base_dir, self.uid, self.gid)

    def _credentials(self) -> dict[str, Any]:
        # started as `cyrus_user` rather than switching to it: a change of user would clear
        # the death signal (prctl PR_SET_PDEATHSIG) and leave it running after the tests
        if os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def _command(self) -> list[str]:
        return [
            str(self.bin_dir / "master"),
            "-C",
            str(self.config_path),
            "-M",
            str(self.master_config),
            "-p",
            str(self.base_dir / "run/master.pid"),
        ]

    def _environment(self) -> dict[str, str]:
        return {**super()._environment(), "LD_LIBRARY_PATH": str(self.lib_dir)}

    def deliver(self, recipient: str, message: bytes, sender: str = "sender@example.test") -> None:
        """Over LMTP (Debian's `lmtpunix` service), as Postfix hands mail to Cyrus."""
        lmtp = smtplib.LMTP(str(self.lmtp_socket), local_hostname="localhost")
        try:
            refused = lmtp.sendmail(sender, [recipient], message)
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                lmtp.quit()
        if refused:
            raise OtherServerError(f"LMTP refused {recipient}: {refused}")

    def _add_user(self, name: str, password: str) -> None:
        local, _, domain = name.partition("@")
        subprocess.run(
            [
                str(self.tree.root / "usr/sbin/saslpasswd2"),
                "-p",
                "-c",
                "-f",
                str(self.sasldb),
                "-u",
                domain,
                local,
            ],
            input=password.encode(),
            env=self._environment(),
            capture_output=True,
            check=True,
            timeout=30,
        )
        if os.geteuid() == 0:
            os.chown(self.sasldb, self.uid, self.gid)
        self.sasldb.chmod(0o600)


# -- Courier --------------------------------------------------------------------------------------


class CourierServer(OtherImapServer):
    """Courier-IMAP 5 (Debian's `courier-imap`): `couriertcpd` for IMAP and for IMAPS (through
    `couriertls`) and `authdaemond` with a userdb, in a mount namespace of their own."""

    kind = "courier"
    # `unshare` ignores SIGTERM; killed, it takes the namespace with it (--kill-child)
    death_signal = signal.SIGKILL
    trim_capabilities = ("CONDSTORE", "QRESYNC", "MOVE")

    def __init__(
        self,
        tree: DebianTree,
        base_dir: Path,
        imap_port: int,
        imaps_port: int,
        *,
        initial_folders: Sequence[str] = ("Drafts", "Sent", "Trash", "Junk"),
    ) -> None:
        super().__init__(tree, base_dir, imap_port, imaps_port)
        # Courier creates no folder itself: a host's webmail makes these at the first login
        # (no special-use attributes: Courier has none, clients know them by their names)
        self.initial_folders = tuple(initial_folders)
        self.etc_dir = self.base_dir / "etc-courier"  # /etc/courier in the namespace
        self.skeleton = self.base_dir / "etc-skeleton"  # lays /etc/courier over /etc
        self.mail_dir = self.base_dir / "mail"
        self.script = self.base_dir / "run-courier.sh"
        self.var_dir = self.base_dir / "var"
        if os.geteuid() == 0:
            self.user, _group, self.uid, self.gid = _run_as()
        else:  # mapped to the caller in a user namespace of its own
            self.user, self.uid, self.gid = "root", 0, 0

    def _prepare(self) -> None:
        root = self.tree.root
        _check_libraries(
            self.tree,
            [
                root / "usr/bin/imapd",
                root / "usr/sbin/couriertcpd",
                root / "usr/bin/couriertls",
                root / "usr/lib/courier/courier-authlib/authdaemond",
                root / "usr/lib/courier/courier/imaplogin",
                root / "usr/lib/courier-authlib/libauthuserdb.so.0",
            ],
            f"{root}/usr/lib:{root}/usr/lib/x86_64-linux-gnu:{root}/usr/lib/courier-authlib",
        )
        if shutil.which("unshare") is None:
            raise OtherServerError("Courier runs in a mount namespace: install util-linux")
        for path in (self.etc_dir, self.skeleton / "courier", self.mail_dir, self.var_dir):
            path.mkdir(parents=True, exist_ok=True)
        if not self.ca_file.exists():
            make_certificate(self.tls_dir, f"courier {self.imap_port}")
        # couriertls reads the key and the certificates from one file
        pem = (self.tls_dir / "server.key").read_bytes() + (
            self.tls_dir / "server.pem"
        ).read_bytes()
        fd = os.open(self.etc_dir / "imapd.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        packaged = root / "etc/courier"
        for name, overrides in (
            ("imapd", self._imapd_overrides()),
            ("imapd-ssl", self._imapd_ssl_overrides()),
            ("authdaemonrc", self._authdaemonrc_overrides()),
        ):
            text = (packaged / name).read_text()
            (self.etc_dir / name).write_text(
                text + "\n# this instance's own\n" + "\n".join(overrides) + "\n"
            )
        self._write_accounts()
        self._write_userdb()
        self.script.write_text(self._script())
        self.script.chmod(0o755)

    def _write_accounts(self) -> None:
        """/etc/passwd and /etc/group in the namespace: the system's, and the `courier` account
        the package's postinst would add (couriertls drops to it), as the mail user's ids."""
        for name, line in (
            (
                "passwd",
                f"courier:x:{self.uid}:{self.gid}:Courier:/var/lib/courier:/usr/sbin/nologin",
            ),
            ("group", f"courier:x:{self.gid}:"),
        ):
            system = Path("/etc", name).read_text()
            kept = [entry for entry in system.splitlines() if not entry.startswith("courier:")]
            (self.skeleton / name).write_text("\n".join([*kept, line]) + "\n")
        for path in (self.etc_dir / "imapd.pem",):
            if os.geteuid() == 0:
                os.chown(path, self.uid, self.gid)

    def _signal_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill the namespace's first process: the kernel ends every process of the namespace
        with it, and `unshare` (which ignores SIGTERM) reaps it and exits."""
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        if not children:
            proc.kill()

    def _imapd_overrides(self) -> list[str]:
        return [
            f"ADDRESS={self.host}",
            f"PORT={self.imap_port}",
            f"PIDFILE={self.base_dir}/run/imapd.pid",
            "IMAPACCESSFILE=/etc/courier/imapaccess",
        ]

    def _imapd_ssl_overrides(self) -> list[str]:
        return [
            f"SSLADDRESS={self.host}",
            f"SSLPORT={self.imaps_port}",
            f"SSLPIDFILE={self.base_dir}/run/imapd-ssl.pid",
            "TLS_CERTFILE=/etc/courier/imapd.pem",
            f"TLS_CACHEFILE={self.var_dir}/couriersslimapcache",
        ]

    def _authdaemonrc_overrides(self) -> list[str]:
        # Debian asks PAM (system accounts); a host keeps its mail users in a database
        return ['authmodulelist="authuserdb"', "daemons=3"]

    def _script(self) -> str:
        """What runs as the namespace's first process: the mounts, then the daemons, as the
        Debian init scripts start them (without courierlogger: output goes to the log)."""
        root = self.tree.root
        return f"""#!/bin/sh
set -eu
mount -t overlay overlay -o lowerdir={root}/usr:/usr /usr
mount -t overlay overlay -o lowerdir={self.skeleton}:/etc /etc
mount --bind {self.etc_dir} /etc/courier
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/courier/authdaemon
chmod 750 /run/courier/authdaemon
(
  set -a
  . /etc/courier/authdaemonrc
  exec /usr/lib/courier/courier-authlib/authdaemond
) &
while [ ! -S /run/courier/authdaemon/socket ]; do sleep 0.02; done
# /usr/lib/courier/imapd start
env -i /bin/sh -c 'set -a; prefix=/usr; exec_prefix=/usr; sbindir=/usr/sbin; bindir=/usr/bin
  . /etc/courier/imapd; . /etc/courier/imapd-ssl
  IMAP_STARTTLS=$IMAPDSTARTTLS
  umask $IMAP_UMASK
  ulimit -v $IMAP_ULIMITD
  exec /usr/sbin/couriertcpd -address=$ADDRESS -maxprocs=$MAXDAEMONS -maxperip=$MAXPERIP \\
    $TCPDOPTS $PORT /usr/lib/courier/courier/imaplogin /usr/bin/imapd $MAILDIRPATH' &
# /usr/lib/courier/imapd-ssl start
env -i /bin/sh -c 'set -a; prefix=/usr; exec_prefix=/usr; sbindir=/usr/sbin; bindir=/usr/bin
  . /etc/courier/imapd; . /etc/courier/imapd-ssl
  rm -f "$TLS_CACHEFILE"; touch "$TLS_CACHEFILE"; chown courier:courier "$TLS_CACHEFILE"
  chmod 600 "$TLS_CACHEFILE"
  IMAP_TLS=1
  umask $IMAP_UMASK
  ulimit -v $IMAP_ULIMITD
  exec /usr/sbin/couriertcpd -address=$SSLADDRESS -maxprocs=$MAXDAEMONS \\
    -maxperip=$MAXPERIP $TCPDOPTS $SSLPORT $COURIERTLS -server -tcpd -user=courier \\
    /usr/lib/courier/courier/imaplogin /usr/bin/imapd $MAILDIRPATH' &
wait
"""

    def _command(self) -> list[str]:
        namespaces = ["--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
        if os.geteuid() != 0:
            namespaces = ["--user", "--map-root-user", *namespaces]
        return ["unshare", *namespaces, "/bin/sh", str(self.script)]

    def _add_user(self, name: str, password: str) -> None:
        home = self.mail_dir / name
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        _chown_tree(home, self.uid, self.gid)
        for path in (home, home / "Maildir"):
            path.chmod(0o700)
        self._users[name] = password
        self._write_userdb()

    def deliver(self, recipient: str, message: bytes, sender: str = "sender@example.test") -> None:
        """Into the user's Maildir `new/` by way of `tmp/`, as maildrop and deliverquota do."""
        name = recipient.strip().lower()
        if name not in self._users:
            raise OtherServerError(f"no user {name} on {self!r}")
        maildir = self.mail_dir / name / "Maildir"
        unique = f"{time.time_ns() // 1000}.P{os.getpid()}Q{secrets.token_hex(4)}.localhost"
        tmp = maildir / "tmp" / unique
        tmp.write_bytes(f"Return-Path: <{sender}>\r\n".encode() + message)
        if os.geteuid() == 0:
            os.chown(tmp, self.uid, self.gid)
        tmp.chmod(0o600)
        os.replace(tmp, maildir / "new" / unique)

    def _write_userdb(self) -> None:
        """userdb.dat and userdbshadow.dat, as `makeuserdb` builds them from /etc/courier/userdb."""
        plain: list[str] = []
        shadow: list[str] = []
        for name, password in sorted(self._users.items()):
            home = self.mail_dir / name
            plain.append(
                f"{name}\tuid={self.uid}|gid={self.gid}|home={home}|mail={home}/Maildir|_="
            )
            salt = secrets.token_bytes(4)
            digest = hashlib.sha1(password.encode() + salt).digest()
            shadow.append(f"{name}\tsystempw={{SSHA}}{base64.b64encode(digest + salt).decode()}")
        makedat = self.tree.root / "usr/lib/courier/courier-authlib/makedatprog"
        for lines, name, mode in ((plain, "userdb", 0o644), (shadow, "userdbshadow", 0o600)):
            subprocess.run(
                [
                    str(makedat),
                    "-",
                    str(self.etc_dir / f"{name}.tmp"),
                    str(self.etc_dir / f"{name}.dat"),
                ],
                input=("\n".join([*lines, "."]) + "\n").encode(),
                capture_output=True,
                check=True,
                timeout=30,
            )
            (self.etc_dir / f"{name}.dat").chmod(mode)


# -- starting one, for the fixtures ---------------------------------------------------------------


def start_server(kind: str, **kwargs: Any) -> OtherImapServer:
    """A started Cyrus or Courier on free ports in a fresh directory (retried on a port race)."""
    if kind == "cyrus":
        tree = unpacked("cyrus", CYRUS_PACKAGES)
    elif kind == "courier":
        tree = unpacked("courier", COURIER_PACKAGES)
    else:
        raise OtherServerError(f"unknown server {kind!r}: cyrus or courier")
    last: OtherServerError | None = None
    for _ in range(3):
        base = make_base_dir(f"imapdesk-test-{kind}-")
        server: OtherImapServer
        if kind == "cyrus":
            server = CyrusServer(tree, base, free_port(), free_port(), **kwargs)
        else:
            server = CourierServer(tree, base, free_port(), free_port(), **kwargs)
        try:
            server.start()
        except OtherServerError as exc:
            last = exc
            shutil.rmtree(base, ignore_errors=True)
            continue
        return server
    assert last is not None
    raise last


def discard_server(server: OtherImapServer) -> None:
    server.stop()
    shutil.rmtree(server.base_dir, ignore_errors=True)


@contextlib.contextmanager
def running_server(kind: str, **kwargs: Any) -> Iterator[OtherImapServer]:
    server = start_server(kind, **kwargs)
    try:
        yield server
    finally:
        discard_server(server)


def main() -> None:
    """`python -m tests.support.other_servers fetch`: fill the cache (scripts/bootstrap.sh)."""
    import sys

    if sys.argv[1:] != ["fetch"]:
        raise SystemExit("usage: python -m tests.support.other_servers fetch")
    for name, packages in (("cyrus", CYRUS_PACKAGES), ("courier", COURIER_PACKAGES)):
        tree = unpacked(name, packages)
        print(f"{name}: {tree.path} ({tree.describe()})")


if __name__ == "__main__":
    main()
