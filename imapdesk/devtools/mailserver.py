"""A private Dovecot instance on loopback for tests, `imapdesk demo` and benchmarks.

Everything an instance needs lives under its `base_dir`: configuration, Dovecot's own base and
state directories, the mail store, the passwd files, the log and a small TLS authority whose
certificate (`ca_file`) clients trust. Several instances run side by side; none touches
/etc/dovecot or syslog.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import grp
import hashlib
import json
import logging
import mailbox
import os
import pwd
import re
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from imapclient import IMAPClient

from imapdesk.devtools.certificates import certificate_is_fresh, write_local_certificate
from imapdesk.kernel.errors import ConfigurationError

logger = logging.getLogger(__name__)

Storage = Literal["maildir", "sdbox"]
STORAGES: tuple[str, ...] = get_args(Storage)

SETTINGS_FILE = "mailserver.json"
INSTALL_HINT = (
    "install it with `apt-get install dovecot-imapd dovecot-lmtpd` (or run scripts/bootstrap.sh)"
)
# Special-use folders every account gets, created and subscribed on first login.
SPECIAL_USE_FOLDERS: tuple[tuple[str, str], ...] = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Archive", "\\Archive"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
)
# CAPABILITY_STRING of Dovecot 2.3.19's imap binary, used when the binary cannot be read.
_FALLBACK_STATIC_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE"
)
# Capabilities Dovecot appends at run time for this configuration; an explicit
# `imap_capability` suppresses them, so a trimmed list must name them itself.
_DYNAMIC_CAPABILITIES = ("LITERAL+", "NOTIFY", "METADATA", "SPECIAL-USE")
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# Unix socket paths are limited to 108 bytes; Dovecot's longest socket name adds about 30.
_MAX_RUN_DIR_LEN = 75
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9._+\-=]*(@[a-z0-9.\-]+)?$")
_UNSAFE_PATH_CHARS = set(" \t\r\n%\"'#\\$:;{}")
_SEED_BATCH_BYTES = 16 * 1024 * 1024
_DATE_HEADER_RE = re.compile(rb"(?im)^date:[ \t]*(.*(?:\r?\n[ \t].*)*)")


class LocalMailServerError(ConfigurationError):
    """The local Dovecot could not be set up, started or stopped; the message says why."""

    code = "local_mail_server_error"


class DovecotNotInstalled(LocalMailServerError):
    code = "dovecot_not_installed"


@dataclass(frozen=True)
class SeedMessage:
    """One message to seed, with its own flags and internal date."""

    raw: bytes
    flags: Sequence[str] = ()
    internal_date: dt.datetime | None = None


@dataclass(frozen=True)
class MailAccount:
    """A user on a `LocalMailServer` and everything a client needs to reach it."""

    user: str
    password: str
    host: str
    imap_port: int
    imaps_port: int
    ca_file: Path
    server: LocalMailServer = field(repr=False, compare=False)

    def connect(self, *, ssl: bool = False, starttls: bool = False) -> IMAPClient:
        return self.server.connect(self.user, self.password, ssl=ssl, starttls=starttls)


@dataclass(frozen=True)
class _RunAs:
    """Who Dovecot's unprivileged processes and the mail files run as."""

    internal_user: str
    login_user: str
    internal_group: str
    mail_user: str
    mail_group: str
    as_root: bool

    @property
    def mail_uid(self) -> int:
        return pwd.getpwnam(self.mail_user).pw_uid

    @property
    def mail_gid(self) -> int:
        return grp.getgrnam(self.mail_group).gr_gid


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_base_dir(prefix: str = "imapdesk-mailserver-") -> Path:
    """A fresh temporary directory Dovecot's unprivileged processes can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def find_binary(name: str) -> str:
    """The path of a Dovecot program, also when sbin directories are not on PATH."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise DovecotNotInstalled(f"`{name}` was not found: {INSTALL_HINT}", binary=name)


def dovecot_capabilities(*, libexec_dir: Path | None = None) -> list[str]:
    """What the installed Dovecot advertises after login with this module's configuration."""
    static = _FALLBACK_STATIC_CAPABILITIES
    imap_binary = (libexec_dir or _libexec_dir()) / "imap"
    with contextlib.suppress(OSError):
        found = re.findall(rb"IMAP4rev1 SASL-IR LOGIN-REFERRALS [ -~]+", imap_binary.read_bytes())
        if found:
            static = max(found, key=len).decode("ascii")
    caps = static.split()
    caps += [cap for cap in _DYNAMIC_CAPABILITIES if cap not in caps]
    return caps


def _libexec_dir() -> Path:
    try:
        out = subprocess.run(
            [find_binary("doveconf"), "-c", "/dev/null", "-h", "libexec_dir"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError, DovecotNotInstalled):
        out = ""
    return Path(out or "/usr/lib/dovecot")


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _default_run_as() -> _RunAs:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return _RunAs(me, me, group, me, group, as_root=False)
    # The Debian package creates `dovecot` (internal, mail) and `dovenull` (login processes).
    internal = "dovecot" if _account_exists("dovecot") else "nobody"
    login = "dovenull" if _account_exists("dovenull") else "nobody"
    group = "dovecot" if _group_exists("dovecot") else "nogroup"
    return _RunAs(internal, login, group, internal, group, as_root=True)


def _check_path_is_safe(path: Path) -> None:
    bad = sorted(set(str(path)) & _UNSAFE_PATH_CHARS)
    if bad:
        raise LocalMailServerError(
            f"the mail server directory {path} contains characters Dovecot's configuration "
            f"cannot hold ({' '.join(repr(c) for c in bad)}): choose another directory",
            path=str(path),
        )


def ensure_traversable(
    path: Path, user: str, who: str = "Dovecot runs its mail and auth processes"
) -> None:
    """Make sure an unprivileged mail server process (`who` ... as `user`) can reach `path`,
    or refuse with the fix.

    Our own private directories under the temp dir (pytest's `tmp_path` lives in a 0700
    `/tmp/pytest-of-root`, `mktemp -d` makes 0700 ones) get the traverse-only bit o+x;
    anything else is left alone.
    """
    account = pwd.getpwnam(user)
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    temp_root = Path(tempfile.gettempdir()).resolve()
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if ok:
            continue
        resolved = directory.resolve()
        if st.st_uid == os.geteuid() and resolved.is_relative_to(temp_root):
            directory.chmod(st.st_mode & 0o7777 | 0o001)
            logger.info("made %s traversable (o+x) for %s", directory, user)
            continue
        raise LocalMailServerError(
            f"{who} as `{user}`, which cannot enter "
            f"{directory} (mode {st.st_mode & 0o777:o}): make it traversable "
            f"(`chmod o+x {directory}`) or put the mail server directory elsewhere, "
            "e.g. under /var/tmp",
            path=str(directory),
            user=user,
        )


def _sleep_to_next_second() -> None:
    time.sleep(1.02 - (time.time() % 1.0))


def _date_from_header(raw: bytes) -> dt.datetime | None:
    head = raw[: raw.find(b"\n\n")] if b"\n\n" in raw[:65536] else raw[:65536]
    match = _DATE_HEADER_RE.search(head)
    if not match:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(match.group(1).decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


_MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen"}
_HEADER_SNIFF_RE = re.compile(
    rb"(?im)^(from|to|subject|date|message-id|received|return-path|mime-version):"
)


@dataclass(frozen=True)
class MessageFile:
    """A file holding mail to seed: one message (.eml, Maildir entry) or an mbox."""

    path: Path
    kind: Literal["eml", "mbox"]
    flags: tuple[str, ...] = ()

    def count(self) -> int:
        if self.kind == "eml":
            return 1
        box = mailbox.mbox(self.path, create=False)
        try:
            return len(box)
        finally:
            box.close()

    def messages(self) -> Iterator[SeedMessage]:
        if self.kind == "eml":
            yield SeedMessage(self.path.read_bytes(), self.flags)
            return
        box = mailbox.mbox(self.path, create=False)
        try:
            for key in box.iterkeys():
                yield SeedMessage(box.get_bytes(key), self.flags)
        finally:
            box.close()


def collect_message_files(paths: Iterable[Path]) -> list[MessageFile]:
    """The mail in .eml files, mbox files and (nested) Maildir or plain directories.

    Files named explicitly are always taken (as mbox when they start with a `From ` line);
    inside directories only files that look like mail are, with the flags a Maildir file
    name carries (`:2,FS` -> \\Flagged \\Seen).
    """
    found: list[MessageFile] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append(MessageFile(path, "mbox" if _starts_like_mbox(path) else "eml"))
        elif path.is_dir():
            found.extend(_walk_mail_dir(path))
        else:
            raise LocalMailServerError(f"no such file or directory: {path}", path=str(path))
    return found


def _starts_like_mbox(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(5) == b"From "


def _walk_mail_dir(root: Path) -> Iterator[MessageFile]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d != "tmp")
        in_maildir = Path(directory).name in ("cur", "new")
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(directory) / name
            with path.open("rb") as fh:
                head = fh.read(4096)
            if head.startswith(b"From "):
                yield MessageFile(path, "mbox")
            elif in_maildir or path.suffix.lower() == ".eml" or _HEADER_SNIFF_RE.search(head):
                info = name.rpartition(":2,")[2] if ":2," in name else ""
                flags = tuple(_MAILDIR_FLAGS[c] for c in sorted(set(info)) if c in _MAILDIR_FLAGS)
                yield MessageFile(path, "eml", flags)


class LocalMailServer:
    """A self-contained Dovecot on 127.0.0.1: IMAP (with STARTTLS), IMAPS and LMTP.

    As root the master runs as root and everything else as the Debian `dovecot`/`dovenull`
    accounts; as another user everything runs as that user.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        imap_port: int,
        imaps_port: int,
        storage: Storage = "maildir",
        trim_capabilities: Sequence[str] = (),
        *,
        lmtp: bool = True,
        lmtp_port: int | None = None,
        instance_name: str | None = None,
        namespace_prefix: str = "",
        separator: str = "/",
        special_use: bool = True,
        oauth2_introspection_url: str | None = None,
        max_userip_connections: int = 200,
        max_connections: int | None = None,
    ) -> None:
        if storage not in STORAGES:
            raise LocalMailServerError(f"unknown storage {storage!r}, use one of {STORAGES}")
        self.base_dir = Path(base_dir).absolute()
        self.imap_port = imap_port
        self.imaps_port = imaps_port
        self.storage: Storage = storage
        self.trim_capabilities = tuple(cap.upper() for cap in trim_capabilities)
        # the personal namespace as hosting providers configure it: prefix "INBOX." and "."
        # as separator put every folder under INBOX (Courier, Cyrus, cPanel's Dovecot);
        # without `special_use` the folders have no RFC 6154 attributes, only their names
        if separator not in ("/", ".") or (
            namespace_prefix and namespace_prefix != "INBOX" + separator
        ):
            raise LocalMailServerError(
                f"unsupported namespace {namespace_prefix!r} with separator {separator!r}: use "
                "no prefix, or INBOX followed by the separator"
            )
        self.namespace_prefix = namespace_prefix
        self.separator = separator
        self.special_use = special_use
        # OAuth2 logins (SASL XOAUTH2 and OAUTHBEARER) besides passwords: Dovecot's `oauth2`
        # passdb asks this RFC 7662 introspection endpoint (credentials in the URL's userinfo,
        # sent as HTTP basic authentication) whether a token is active and whose it is
        self.oauth2_introspection_url = oauth2_introspection_url
        # Dovecot's own default is 10 per user and client address: what hosting providers keep
        self.max_userip_connections = max_userip_connections
        # all users together (a benchmark's hundreds of mailboxes): Dovecot's own defaults stop
        # at about 100 TLS connections (one login process each) and 1024 IMAP processes
        self.max_connections = max_connections
        self.lmtp = lmtp
        self.lmtp_port = lmtp_port
        digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:8]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.base_dir.name).strip("-")
        slug = slug.removeprefix("imapdesk-")[:24].strip("-") or "instance"
        self.instance_name = instance_name or f"imapdesk-{slug}-{digest}"
        self.config_path = self.base_dir / "dovecot.conf"
        self.settings_path = self.base_dir / SETTINGS_FILE
        self.state_dir = self.base_dir / "state"
        run_dir = self.base_dir / "run"
        if len(str(run_dir)) > _MAX_RUN_DIR_LEN:
            run_dir = Path(tempfile.gettempdir()) / f"imapdesk-dovecot-{digest}"
        # Dovecot's `base_dir`: sockets, master.pid.
        self.run_dir = run_dir
        self.mail_dir = self.base_dir / "mail"
        # One passwd-file per user: Dovecot stats a passwd-file at most once per second, so a
        # user added to a shared file right after another login stays unknown for up to 1 s.
        self.users_dir = self.base_dir / "users"
        self.log_path = self.base_dir / "dovecot.log"
        self.tls_dir = self.base_dir / "tls"
        self.ca_file = self.tls_dir / "ca.pem"
        self.cert_path = self.tls_dir / "server.pem"
        self.key_path = self.tls_dir / "server.key"
        self.run_as = _default_run_as()

    def __repr__(self) -> str:
        return (
            f"LocalMailServer({str(self.base_dir)!r}, imap_port={self.imap_port}, "
            f"imaps_port={self.imaps_port}, storage={self.storage!r})"
        )

    # -- persisted settings -------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {
            "imap_port": self.imap_port,
            "imaps_port": self.imaps_port,
            "storage": self.storage,
            "trim_capabilities": list(self.trim_capabilities),
            "namespace_prefix": self.namespace_prefix,
            "separator": self.separator,
            "special_use": self.special_use,
            "oauth2_introspection_url": self.oauth2_introspection_url,
            "max_userip_connections": self.max_userip_connections,
            "max_connections": self.max_connections,
            "lmtp": self.lmtp,
            "lmtp_port": self.lmtp_port,
            "instance_name": self.instance_name,
        }

    def save_settings(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.settings_path.write_text(json.dumps(self.settings(), indent=2) + "\n")

    @classmethod
    def load(cls, base_dir: Path) -> LocalMailServer:
        """The instance whose settings `start()` saved in `base_dir`."""
        path = Path(base_dir) / SETTINGS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LocalMailServerError(
                f"no mail server in {base_dir} ({path} is missing): start one first",
                path=str(path),
            ) from None
        return cls(
            Path(base_dir),
            imap_port=int(data["imap_port"]),
            imaps_port=int(data["imaps_port"]),
            storage=data.get("storage", "maildir"),
            trim_capabilities=data.get("trim_capabilities", ()),
            lmtp=bool(data.get("lmtp", True)),
            lmtp_port=data.get("lmtp_port"),
            instance_name=data.get("instance_name"),
            namespace_prefix=data.get("namespace_prefix", ""),
            separator=data.get("separator", "/"),
            special_use=bool(data.get("special_use", True)),
            oauth2_introspection_url=data.get("oauth2_introspection_url"),
            max_userip_connections=int(data.get("max_userip_connections", 200)),
            max_connections=data.get("max_connections"),
        )

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "master.pid"

    @property
    def lmtp_socket(self) -> Path:
        return self.run_dir / "lmtp"

    def master_pid(self) -> int | None:
        """The pid of this instance's Dovecot master, if it is running."""
        # the [demo] extra, imported on use: without it the command line loads and says so
        import psutil

        try:
            pid = int(self.pid_path.read_text().strip())
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = proc.cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        if str(self.config_path) not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        return self.master_pid() is not None

    def start(self, timeout: float = 15.0) -> None:
        """Write the configuration and start Dovecot; returns once IMAP greets."""
        if self.is_running():
            logger.debug("mail server %s already running", self.instance_name)
            return
        dovecot = find_binary("dovecot")
        find_binary("doveadm")
        self._prepare()
        started = time.monotonic()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The daemonized master keeps its stderr open: a pipe would never reach EOF.
        with tempfile.TemporaryFile(mode="w+") as errors:
            proc = subprocess.run(
                [dovecot, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                timeout=timeout,
                check=False,
            )
            errors.seek(0)
            stderr = errors.read()
        if proc.returncode != 0:
            raise self._start_error(
                f"`dovecot -c {self.config_path}` failed (exit {proc.returncode})",
                stderr,
                log_offset,
            )
        problem = ""
        while not self._greets():
            waited = time.monotonic() - started
            if waited > timeout:
                problem = f"Dovecot did not answer on {self.host}:{self.imap_port} in {timeout} s"
            elif waited > 1 and not self.is_running():
                problem = "Dovecot exited right after starting"
            if problem:
                error = self._start_error(problem, stderr, log_offset)
                self.stop()
                raise error
            time.sleep(0.02)
        logger.info(
            "mail server %s started in %.2f s: imap %s:%d, imaps %d, %s in %s",
            self.instance_name,
            time.monotonic() - started,
            self.host,
            self.imap_port,
            self.imaps_port,
            self.storage,
            self.base_dir,
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Dovecot and wait until its master has exited (Dovecot takes about 3 s)."""
        import psutil

        pid = self.master_pid()
        if pid is None:
            return
        started = time.monotonic()
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        result = self.doveadm("stop", check=False)
        if result.returncode != 0:
            logger.warning(
                "doveadm stop failed for %s (%s); sending SIGTERM to %d",
                self.instance_name,
                result.stderr.strip(),
                pid,
            )
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            logger.warning("Dovecot master %d did not exit in %s s: killing it", pid, timeout)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                proc.wait(5)
        if not self.run_dir.is_relative_to(self.base_dir):
            # A run dir moved out of a long base_dir holds only sockets and the pid file.
            shutil.rmtree(self.run_dir, ignore_errors=True)
        logger.info(
            "mail server %s stopped in %.2f s", self.instance_name, time.monotonic() - started
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read the configuration (after changing settings) without dropping the master."""
        self._write_config()
        self.doveadm("reload")

    def doveadm(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run doveadm against this instance (never the system's /etc/dovecot)."""
        cmd = [find_binary("doveadm"), "-c", str(self.config_path), *args]
        result = subprocess.run(
            cmd, capture_output=True, text=True, input=input, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise LocalMailServerError(
                f"`doveadm {' '.join(args)}` failed (exit {result.returncode}): "
                f"{result.stderr.strip()}",
                returncode=result.returncode,
            )
        return result

    def log_tail(self, lines: int = 30, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- users --------------------------------------------------------------------------

    def users(self) -> dict[str, str]:
        """User name -> password."""
        result: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(self.users_dir.iterdir()):
                if path.name.startswith("."):
                    continue
                name, _, rest = path.read_text().partition(":")
                secret = rest.split(":", 1)[0]
                if name == path.name and secret.startswith("{PLAIN}"):
                    result[name] = secret.removeprefix("{PLAIN}")
        return result

    def add_user(self, user: str, password: str) -> str:
        """Add a user (or change its password); returns the name Dovecot knows it by.

        A new user can log in at once; a changed password takes effect within a second.
        """
        name = self._user_name(user)
        if not password or any(c in password for c in ":\r\n\0"):
            raise LocalMailServerError("a password must be non-empty, without ':' or newlines")
        path = self.users_dir / name
        changed = path.exists() and self.users().get(name) != password
        self._write_user_file(path, f"{name}:{{PLAIN}}{password}::::::\n")
        if changed:
            # Dovecot may have looked this file up during the current second; it stats it
            # again only in the next one.
            _sleep_to_next_second()
        logger.info("mail server %s: user %s added", self.instance_name, name)
        return name

    def remove_user(self, user: str, *, delete_mail: bool = False) -> None:
        """Remove a user (open sessions stay); logins fail from the next second on."""
        name = self._user_name(user)
        with contextlib.suppress(FileNotFoundError):
            (self.users_dir / name).unlink()
            _sleep_to_next_second()
        if delete_mail:
            shutil.rmtree(self.mail_dir / name, ignore_errors=True)
        logger.info("mail server %s: user %s removed", self.instance_name, name)

    def create_account(self, prefix: str = "box", domain: str = "example.test") -> MailAccount:
        """A new user with a unique name and a random password."""
        user = self.add_user(f"{prefix}-{secrets.token_hex(4)}@{domain}", secrets.token_hex(12))
        return self.account(user)

    def folder(self, name: str) -> str:
        """The full name of a folder given as `Sent` or `Projects/2024` (`/` between levels)
        in this server's personal namespace: `INBOX.Sent` under a prefix of `INBOX.`."""
        if name.upper() == "INBOX":
            return "INBOX"
        return self.namespace_prefix + name.replace("/", self.separator)

    def account(self, user: str, password: str | None = None) -> MailAccount:
        name = user.strip().lower()
        if password is None:
            try:
                password = self.users()[name]
            except KeyError:
                raise LocalMailServerError(f"no user {name} on {self.base_dir}") from None
        return MailAccount(
            name, password, self.host, self.imap_port, self.imaps_port, self.ca_file, self
        )

    # -- clients ------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate authority."""
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
            host or self.host, port=port, ssl=ssl, ssl_context=context, timeout=timeout
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
        """Append messages with MULTIAPPEND, creating the folder if missing; returns the count.

        The internal date comes from each message's Date header unless `date_from_header` is
        off or a `SeedMessage` gives one; `on_progress` receives the count after each batch.
        """
        total = 0
        with self._client(user, password) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
                client.subscribe_folder(folder)
            multiappend = client.has_capability("MULTIAPPEND")
            for chunk in self._batches(messages, flags, batch, date_from_header):
                if multiappend:
                    client.multiappend(folder, chunk)
                else:  # a server trimmed of MULTIAPPEND
                    for entry in chunk:
                        client.append(
                            folder, entry["msg"], entry.get("flags", ()), entry.get("date")
                        )
                total += len(chunk)
                if on_progress is not None:
                    on_progress(len(chunk))
        logger.info(
            "mail server %s: seeded %d messages into %s/%s", self.instance_name, total, user, folder
        )
        return total

    def deliver(self, recipient: str, message: bytes, sender: str = "sender@example.test") -> None:
        """Deliver one message over LMTP, as an MTA would (it arrives \\Recent, unseen)."""
        if not self.lmtp:
            raise LocalMailServerError("LMTP is disabled on this mail server")
        lmtp = smtplib.LMTP(str(self.lmtp_socket), local_hostname="localhost")
        try:
            refused = lmtp.sendmail(sender, [recipient], message)
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                lmtp.quit()
        if refused:
            raise LocalMailServerError(f"LMTP refused {recipient}: {refused}")

    # -- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _client(self, user: str, password: str) -> Iterator[IMAPClient]:
        client = self.connect(user, password)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    @staticmethod
    def _batches(
        messages: Iterable[bytes | SeedMessage],
        flags: Sequence[str],
        batch: int,
        date_from_header: bool,
    ) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = 0
        for item in messages:
            msg = item if isinstance(item, SeedMessage) else SeedMessage(item)
            entry: dict[str, Any] = {"msg": msg.raw}
            all_flags = list(dict.fromkeys([*flags, *msg.flags]))
            if all_flags:
                entry["flags"] = all_flags
            date = msg.internal_date or (_date_from_header(msg.raw) if date_from_header else None)
            if date is not None:
                entry["date"] = date
            chunk.append(entry)
            size += len(msg.raw)
            if len(chunk) >= batch or size >= _SEED_BATCH_BYTES:
                yield chunk
                chunk, size = [], 0
        if chunk:
            yield chunk

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.imap_port), timeout=1) as sock:
                return sock.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def _start_error(self, what: str, stderr: str, log_offset: int) -> LocalMailServerError:
        details = "\n".join(
            part for part in (stderr.strip(), self.log_tail(offset=log_offset)) if part
        )
        return LocalMailServerError(
            f"{what}; see {self.log_path}:\n{details or '(no output)'}",
            log_path=str(self.log_path),
        )

    def _prepare(self) -> None:
        _check_path_is_safe(self.base_dir)
        _check_path_is_safe(self.run_dir)
        for directory in (self.base_dir, self.state_dir, self.tls_dir, self.mail_dir):
            directory.mkdir(parents=True, exist_ok=True)
        run_as = self.run_as
        if run_as.as_root:
            self.base_dir.chmod(0o755)
            ensure_traversable(self.base_dir, run_as.internal_user)
            os.chown(self.mail_dir, run_as.mail_uid, run_as.mail_gid)
            self.mail_dir.chmod(0o750)
        self._ensure_certificate()
        self.users_dir.mkdir(exist_ok=True)
        if run_as.as_root:
            os.chown(self.users_dir, 0, grp.getgrnam(run_as.internal_group).gr_gid)
            self.users_dir.chmod(0o750)
        else:
            self.users_dir.chmod(0o700)
        self.save_settings()
        self._write_config()

    def _capability_override(self) -> str:
        if not self.trim_capabilities:
            return ""
        caps = dovecot_capabilities()
        return " ".join(cap for cap in caps if cap.upper() not in self.trim_capabilities)

    def _lmtp_available(self) -> bool:
        if not self.lmtp:
            return False
        if (_libexec_dir() / "lmtp").exists():
            return True
        logger.warning(
            "dovecot-lmtpd is not installed: mail server without LMTP (%s)", INSTALL_HINT
        )
        return False

    def config_text(self) -> str:
        """The complete dovecot.conf of this instance."""
        run_as = self.run_as
        lmtp = self._lmtp_available()
        location = "maildir:~/Maildir:LAYOUT=fs" if self.storage == "maildir" else "sdbox:~/sdbox"
        if self.storage == "maildir" and self.namespace_prefix:
            location = "maildir:~/Maildir"  # Maildir++ (.Sent, .Trash), as hosting panels keep it
        mailboxes = "\n".join(
            f"  mailbox {name} {{\n"
            + (f"    special_use = {flag}\n" if self.special_use else "")
            + "    auto = subscribe\n  }"
            for name, flag in SPECIAL_USE_FOLDERS
        )
        lines = [
            "# Written by imapdesk (imapdesk/devtools/mailserver.py); changes are overwritten on"
            " start.",
            f"base_dir = {self.run_dir}",
            f"state_dir = {self.state_dir}",
            f"instance_name = {self.instance_name}",
            f"log_path = {self.log_path}",
            f"protocols = imap{' lmtp' if lmtp else ''}",
            f"listen = {self.host}",
            "ssl = yes",
            f"ssl_cert = <{self.cert_path}",
            f"ssl_key = <{self.key_path}",
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login"
            + (" oauthbearer xoauth2" if self.oauth2_introspection_url else ""),
            "auth_verbose = yes",
            # Every failed login would otherwise delay all later logins from 127.0.0.1 by up
            # to 15 s (the anvil auth penalty); failures still take 0.5 s.
            "auth_failure_delay = 0",
            f"default_internal_user = {run_as.internal_user}",
            f"default_internal_group = {run_as.internal_group}",
            f"default_login_user = {run_as.login_user}",
            f"mail_uid = {run_as.mail_user}",
            f"mail_gid = {run_as.mail_group}",
            "first_valid_uid = 1",
            "first_valid_gid = 1",
            f"mail_home = {self.mail_dir}/%u",
            f"mail_location = {location}",
            "mailbox_list_index = yes",
            "mail_fsync = never",
            "mail_attribute_dict = file:%h/dovecot-attributes",
            f"mail_max_userip_connections = {self.max_userip_connections}",
            "",
            *self._oauth2_passdb(),
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {self.users_dir}/%u",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {self.users_dir}/%u",
            "}",
            "namespace inbox {",
            "  inbox = yes",
            f"  separator = {self.separator}",
            *([f"  prefix = {self.namespace_prefix}"] if self.namespace_prefix else []),
            mailboxes,
            "}",
            "protocol imap {",
            "  imap_metadata = yes",
        ]
        override = self._capability_override()
        if override:
            lines.append(f"  imap_capability = {override}")
        lines += [
            "}",
            "service imap-login {",
            "  inet_listener imap {",
            f"    address = {self.host}",
            f"    port = {self.imap_port}",
            "  }",
            "  inet_listener imaps {",
            f"    address = {self.host}",
            f"    port = {self.imaps_port}",
            "    ssl = yes",
            "  }",
        ]
        if self.max_connections:
            # login processes that serve many connections (TLS included) rather than one each
            lines += [
                "  service_count = 0",
                "  process_min_avail = 2",
                f"  client_limit = {self.max_connections}",
            ]
        if not run_as.as_root:
            lines.append("  chroot =")
        lines.append("}")
        if self.max_connections:
            lines += [
                f"default_client_limit = {self.max_connections + 100}",
                "service imap {",
                f"  process_limit = {self.max_connections}",
                "}",
            ]
        lines += [
            "service anvil {",
            "  unix_listener anvil-auth-penalty {",
            "    mode = 0",
            "  }",
        ]
        if not run_as.as_root:
            lines.append("  chroot =")
        lines.append("}")
        if lmtp:
            lines += [
                "service lmtp {",
                "  unix_listener lmtp {",
                "    mode = 0666",
                "  }",
            ]
            if self.lmtp_port is not None:
                lines += [
                    "  inet_listener lmtp {",
                    f"    address = {self.host}",
                    f"    port = {self.lmtp_port}",
                    "  }",
                ]
            lines.append("}")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.config_path.write_text(self.config_text())
        if self.oauth2_introspection_url:
            self.oauth2_config_path.write_text(
                "\n".join(
                    [
                        f"introspection_url = {self.oauth2_introspection_url}",
                        "introspection_mode = post",
                        "force_introspection = yes",
                        "username_attribute = username",
                        "active_attribute = active",
                        "active_value = true",
                        f"tls_ca_cert_file = {self.ca_file}",
                    ]
                )
                + "\n"
            )
            if self.run_as.as_root:  # the auth process reads it; the URL holds a secret
                group = grp.getgrnam(self.run_as.internal_group).gr_gid
                os.chown(self.oauth2_config_path, 0, group)
                self.oauth2_config_path.chmod(0o640)
            else:
                self.oauth2_config_path.chmod(0o600)

    @property
    def oauth2_config_path(self) -> Path:
        return self.base_dir / "dovecot-oauth2.conf.ext"

    def _oauth2_passdb(self) -> list[str]:
        """The `oauth2` passdb, for the OAuth2 mechanisms only (a password is never sent to
        the introspection endpoint), ahead of the passwd-file."""
        if not self.oauth2_introspection_url:
            return []
        return [
            "passdb {",
            "  driver = oauth2",
            "  mechanisms = xoauth2 oauthbearer",
            "  result_failure = return-fail",  # a token is no password for the passwd-file
            f"  args = {self.oauth2_config_path}",
            "}",
        ]

    @staticmethod
    def _user_name(user: str) -> str:
        name = user.strip().lower()  # auth_username_format = %Lu lowercases logins
        if not _USER_RE.match(name):
            raise LocalMailServerError(f"invalid mail user name {user!r}", user=user)
        return name

    def _write_user_file(self, path: Path, line: str) -> None:
        self.users_dir.mkdir(parents=True, exist_ok=True)
        previous = int(path.stat().st_mtime) if path.exists() else 0
        fd, tmp_name = tempfile.mkstemp(dir=self.users_dir, prefix=".new-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(line)
            if self.run_as.as_root:
                os.chown(tmp, 0, grp.getgrnam(self.run_as.internal_group).gr_gid)
                tmp.chmod(0o640)
            # Dovecot notices a change by mtime (whole seconds) or size: keep mtime increasing.
            stamp = max(int(time.time()), previous + 1)
            os.utime(tmp, (stamp, stamp))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _ensure_certificate(self) -> None:
        """A local certificate authority (`ca_file`) and a server certificate it signed."""
        if certificate_is_fresh(self.cert_path, self.ca_file, self.key_path):
            return
        write_local_certificate(
            ca_path=self.ca_file,
            cert_path=self.cert_path,
            key_path=self.key_path,
            ca_name=f"imapdesk local CA {self.instance_name}",
            days=3650,
        )
        logger.info("mail server %s: new TLS certificate in %s", self.instance_name, self.tls_dir)
