"""The local Dovecot the other tests and the demo rely on, tested against the real thing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from typer.testing import CliRunner

from imapdesk.cli.mailserver import mailserver_app
from imapdesk.devtools.mailserver import (
    DovecotNotInstalled,
    LocalMailServer,
    LocalMailServerError,
    MailAccount,
    SeedMessage,
    collect_message_files,
    ensure_traversable,
    find_binary,
    free_port,
    make_base_dir,
)
from tests.support.corpus import CORPUS, REPO
from tests.support.imap import imap_client


def _message(i: int, to: str = "box@example.test", subject: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.org>"
    msg["To"] = to
    msg["Subject"] = subject or f"Question {i}"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0100"
    msg["Message-ID"] = f"<q{i}.{time.monotonic_ns()}@example.org>"
    msg.set_content(f"Hello, this is question number {i}.\n")
    return msg.as_bytes()


def _folders(client: IMAPClient) -> dict[str, set[bytes]]:
    return {name: set(flags) for flags, _sep, name in client.list_folders()}


# --- TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_starttls_verifies_the_certificate(mail_account: MailAccount, hostname: str) -> None:
    context = ssl.create_default_context(cafile=str(mail_account.ca_file))
    client = IMAPClient(hostname, port=mail_account.imap_port, ssl=False, timeout=10)
    try:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(context)
        client.login(mail_account.user, mail_account.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_imaps_verifies_the_certificate(mail_account: MailAccount, hostname: str) -> None:
    context = ssl.create_default_context(cafile=str(mail_account.ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    client = IMAPClient(
        hostname, port=mail_account.imaps_port, ssl=True, ssl_context=context, timeout=10
    )
    try:
        client.login(mail_account.user, mail_account.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()


def test_tls_refuses_a_wrong_name_and_an_unknown_ca(mailserver: LocalMailServer) -> None:
    trusting = mailserver.ssl_context()
    with (
        socket.create_connection((mailserver.host, mailserver.imaps_port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        trusting.wrap_socket(sock, server_hostname="mail.example.test")
    default = ssl.create_default_context()
    with (
        socket.create_connection((mailserver.host, mailserver.imaps_port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        default.wrap_socket(sock, server_hostname="localhost")


def test_connect_helper_speaks_plain_starttls_and_imaps(mail_account: MailAccount) -> None:
    for kwargs in ({}, {"starttls": True}, {"ssl": True}):
        client = mail_account.connect(**kwargs)
        try:
            assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
        finally:
            client.logout()


# --- what a client sees -------------------------------------------------------------------


def test_special_use_folders_exist_and_are_subscribed(mail_account: MailAccount) -> None:
    client = imap_client(mail_account)
    try:
        folders = _folders(client)
        subscribed = {name for _flags, _sep, name in client.list_sub_folders()}
    finally:
        client.logout()
    expected = {
        "Sent": b"\\Sent",
        "Archive": b"\\Archive",
        "Junk": b"\\Junk",
        "Trash": b"\\Trash",
        "Drafts": b"\\Drafts",
    }
    for name, attribute in expected.items():
        assert attribute in folders[name], (name, folders[name])
        assert name in subscribed
    assert "INBOX" in folders


def test_capabilities(mail_account: MailAccount) -> None:
    client = imap_client(mail_account)
    try:
        caps = set(client.capabilities())
    finally:
        client.logout()
    for cap in (
        b"IDLE",
        b"CONDSTORE",
        b"QRESYNC",
        b"MOVE",
        b"UIDPLUS",
        b"MULTIAPPEND",
        b"ESEARCH",
        b"SPECIAL-USE",
        b"NOTIFY",
        b"METADATA",
        b"LITERAL+",
    ):
        assert cap in caps, cap


def test_trimmed_server_hides_condstore_qresync_and_move(
    mail_account_nocondstore: MailAccount,
) -> None:
    account = mail_account_nocondstore
    before_login = IMAPClient(account.host, port=account.imap_port, ssl=False, timeout=10)
    try:
        assert b"CONDSTORE" not in before_login.capabilities()
        before_login.login(account.user, account.password)
        caps = set(before_login.capabilities())
    finally:
        before_login.logout()
    assert not caps & {b"CONDSTORE", b"QRESYNC", b"MOVE"}
    for cap in (b"IDLE", b"UIDPLUS", b"MULTIAPPEND", b"SPECIAL-USE", b"LITERAL+"):
        assert cap in caps, cap


def test_prefixed_server_keeps_every_folder_under_inbox(
    mail_account_prefixed: MailAccount,
) -> None:
    """As hosting providers configure Dovecot: NAMESPACE says `INBOX.` and `.`, the usual
    folders are there by name without special-use attributes, and a folder outside the
    prefix is refused."""
    client = imap_client(mail_account_prefixed)
    try:
        assert client.namespace().personal == (("INBOX.", "."),)
        listed = {name: flags for flags, _delim, name in client.list_folders()}
        with pytest.raises(IMAPClientError, match="namespace"):
            client.create_folder("Pending")
        client.create_folder("INBOX.Pending")
    finally:
        client.logout()
    assert {"INBOX", "INBOX.Sent", "INBOX.Trash", "INBOX.Junk", "INBOX.Archive"} <= set(listed)
    assert not any(f in flags for flags in listed.values() for f in (b"\\Sent", b"\\Trash"))
    assert mail_account_prefixed.server.folder("Sent") == "INBOX.Sent"


def test_permanentflags_allow_keywords(mail_account: MailAccount) -> None:
    client = imap_client(mail_account)
    try:
        info = client.select_folder("INBOX")
    finally:
        client.logout()
    assert b"\\*" in info[b"PERMANENTFLAGS"]


def test_folder_names_may_contain_dots(mail_account: MailAccount) -> None:
    client = imap_client(mail_account)
    try:
        client.create_folder("Kunden.2024")
        client.create_folder("Kunden.2024/Q1")
        assert {"Kunden.2024", "Kunden.2024/Q1"} <= set(_folders(client))
    finally:
        client.logout()


# --- users and seeding --------------------------------------------------------------------


def test_seed_1000_messages_with_multiappend(mail_account: MailAccount) -> None:
    server = mail_account.server
    count = server.seed(
        mail_account.user,
        mail_account.password,
        "Bulk.2024",
        (_message(i, mail_account.user) for i in range(1000)),
        flags=["\\Seen"],
    )
    assert count == 1000
    client = imap_client(mail_account)
    try:
        assert client.select_folder("Bulk.2024", readonly=True)[b"EXISTS"] == 1000
        assert len(client.search(["UNSEEN"])) == 0
        first = client.fetch([1], ["INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[1]
    finally:
        client.logout()
    assert b"Question 0" in first[b"BODY[HEADER.FIELDS (SUBJECT)]"]
    assert first[b"INTERNALDATE"].year == 2024  # taken from the Date header


def test_seed_keeps_per_message_flags_and_reports_progress(mail_account: MailAccount) -> None:
    progress: list[int] = []
    messages: list[bytes | SeedMessage] = [
        SeedMessage(_message(1), flags=("\\Flagged",)),
        SeedMessage(_message(2), flags=("$Escalated",)),
        _message(3),
    ]
    count = mail_account.server.seed(
        mail_account.user,
        mail_account.password,
        "INBOX",
        messages,
        batch=2,
        on_progress=progress.append,
    )
    assert count == 3
    assert progress == [2, 1]
    client = imap_client(mail_account)
    try:
        client.select_folder("INBOX", readonly=True)
        flags = {
            seq: set(data[b"FLAGS"]) for seq, data in client.fetch([1, 2, 3], ["FLAGS"]).items()
        }
    finally:
        client.logout()
    assert b"\\Flagged" in flags[1]
    assert b"$Escalated" in flags[2]
    assert not flags[3] & {b"\\Flagged", b"\\Seen"}


def test_users_are_isolated(mailserver: LocalMailServer) -> None:
    alice = mailserver.create_account("alice")
    bob = mailserver.create_account("bob")
    mailserver.seed(alice.user, alice.password, "INBOX", [_message(i) for i in range(5)])
    client = imap_client(bob)
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()
    with pytest.raises(LoginError):
        mailserver.connect(bob.user, alice.password)
    with pytest.raises(LoginError):
        mailserver.connect("nobody@example.test", "whatever")


def test_new_user_logs_in_at_once_and_password_changes_apply(mailserver: LocalMailServer) -> None:
    # A login right before makes Dovecot's auth process consult its passwd files this second.
    warm = mailserver.create_account()
    imap_client(warm).logout()
    name = mailserver.add_user("Support.Desk@Example.test", "first-password")
    assert name == "support.desk@example.test"
    mailserver.connect("support.desk@example.test", "first-password").logout()
    mailserver.add_user(name, "second-password")
    with pytest.raises(LoginError):
        mailserver.connect(name, "first-password")
    mailserver.connect(name, "second-password").logout()
    mailserver.remove_user(name)
    assert name not in mailserver.users()
    with pytest.raises(LoginError):
        mailserver.connect(name, "second-password")


@pytest.mark.parametrize("user", ["with space@example.test", "../etc@example.test", ""])
def test_invalid_user_names_are_refused(mailserver: LocalMailServer, user: str) -> None:
    with pytest.raises(LocalMailServerError):
        mailserver.add_user(user, "secret")


def test_password_with_colon_is_refused(mailserver: LocalMailServer) -> None:
    with pytest.raises(LocalMailServerError):
        mailserver.add_user("colon@example.test", "a:b")


def test_lmtp_delivery_lands_unseen_in_inbox(mail_account: MailAccount) -> None:
    mail_account.server.deliver(mail_account.user, _message(7, mail_account.user, "Via LMTP"))
    client = imap_client(mail_account)
    try:
        client.select_folder("INBOX", readonly=True)
        unseen = client.search(["UNSEEN"])
        assert len(unseen) == 1
        body = client.fetch(unseen, ["BODY.PEEK[]"])[unseen[0]][b"BODY[]"]
    finally:
        client.logout()
    assert b"Subject: Via LMTP" in body


def test_two_sessions_see_each_others_changes(
    mail_account: MailAccount, colleague: IMAPClient
) -> None:
    mail_account.server.seed(mail_account.user, mail_account.password, "INBOX", [_message(1)])
    colleague.select_folder("INBOX")
    uid = colleague.search(["ALL"])[0]
    colleague.add_flags([uid], ["\\Seen", "$Claimed"])
    mine = imap_client(mail_account)
    try:
        mine.select_folder("INBOX", readonly=True)
        flags = set(mine.get_flags([uid])[uid])
    finally:
        mine.logout()
    assert {b"\\Seen", b"$Claimed"} <= flags


def test_many_connections_from_one_address(mail_account: MailAccount) -> None:
    clients = [imap_client(mail_account) for _ in range(25)]
    for client in clients:
        client.logout()


# --- lifecycle ----------------------------------------------------------------------------


def test_start_is_idempotent_and_state_is_reported(mailserver: LocalMailServer) -> None:
    pid = mailserver.master_pid()
    assert pid is not None and mailserver.is_running()
    mailserver.start()
    assert mailserver.master_pid() == pid  # the running server was kept, not restarted
    again = LocalMailServer.load(mailserver.base_dir)
    assert again.is_running()
    assert (again.imap_port, again.imaps_port, again.storage) == (
        mailserver.imap_port,
        mailserver.imaps_port,
        "maildir",
    )
    assert mailserver.doveadm("config", "-h", "base_dir").stdout.strip() == str(mailserver.run_dir)


def test_start_failure_names_the_cause(tmp_path: Path) -> None:
    base = make_base_dir("imapdesk-test-portclash-")
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = LocalMailServer(base, imap_port=port, imaps_port=free_port())
            with pytest.raises(LocalMailServerError, match="Address already in use"):
                server.start(timeout=10)
        assert not server.is_running()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_missing_dovecot_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("imapdesk.devtools.mailserver._SBIN_DIRS", ())
    with pytest.raises(DovecotNotInstalled, match="apt-get install dovecot-imapd"):
        find_binary("dovecot")
    server = LocalMailServer(tmp_path / "ms", imap_port=free_port(), imaps_port=free_port())
    with pytest.raises(DovecotNotInstalled, match=r"scripts/bootstrap\.sh"):
        server.start()


def test_collect_message_files_reads_eml_mbox_and_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1700000000.1.host:2,FS").write_bytes(_message(1))
    (maildir / "new" / "1700000000.2.host").write_bytes(_message(2))
    (maildir / "tmp" / "half-written").write_bytes(_message(3))
    (tmp_path / "one.eml").write_bytes(_message(4))
    (tmp_path / "notes.json").write_text('{"not": "mail"}')
    (tmp_path / "archive.mbox").write_bytes(
        b"From a@example.org Mon Jan  1 10:00:00 2024\n"
        + _message(5).replace(b"\r\n", b"\n")
        + b"\nFrom b@example.org Mon Jan  1 11:00:00 2024\n"
        + _message(6).replace(b"\r\n", b"\n")
    )
    files = collect_message_files([tmp_path])
    by_name = {f.path.name: f for f in files}
    assert set(by_name) == {
        "1700000000.1.host:2,FS",
        "1700000000.2.host",
        "one.eml",
        "archive.mbox",
    }
    assert by_name["1700000000.1.host:2,FS"].flags == ("\\Flagged", "\\Seen")
    assert by_name["archive.mbox"].count() == 2
    assert sum(f.count() for f in files) == 5
    assert [m.raw for m in by_name["archive.mbox"].messages()][1].startswith(b"From: Customer 6")
    with pytest.raises(LocalMailServerError, match="no such file"):
        collect_message_files([tmp_path / "missing.eml"])


# --- other storage, the CLI, and running without root ------------------------------------


def test_cli_runs_an_sdbox_server_end_to_end(tmp_path: Path) -> None:
    # Under pytest's private (0700) tmp_path: the server makes it reachable for Dovecot.
    base = tmp_path / "mailserver"
    runner = CliRunner()
    ports = [str(free_port()), str(free_port())]
    try:
        result = runner.invoke(
            mailserver_app,
            [
                "start",
                "--dir",
                str(base),
                "--storage",
                "sdbox",
                "--imap-port",
                ports[0],
                "--imaps-port",
                ports[1],
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads((base / "mailserver.json").read_text())["storage"] == "sdbox"
        result = runner.invoke(
            mailserver_app,
            ["add-user", "support@example.test", "--dir", str(base), "--password-stdin"],
            input="s3cret\n",
        )
        assert result.exit_code == 0, result.output
        corpus = CORPUS / "imaptest-thread"
        mboxes = sorted(corpus.glob("*.mbox"))
        result = runner.invoke(
            mailserver_app,
            ["seed", "support@example.test", "--dir", str(base), "--folder", "Threads"]
            + [str(p) for p in mboxes],
        )
        assert result.exit_code == 0, result.output
        expected = sum(f.count() for f in collect_message_files(mboxes))
        assert f"{expected} messages" in result.output
        result = runner.invoke(mailserver_app, ["status", "--dir", str(base)])
        assert result.exit_code == 0 and "running" in result.output, result.output

        server = LocalMailServer.load(base)
        assert server.storage == "sdbox"
        client = server.connect("support@example.test", "s3cret", ssl=True)
        try:
            assert client.select_folder("Threads")[b"EXISTS"] == expected
            # sdbox keeps any number of keywords (Maildir stops at 26 per folder).
            uids = client.search(["ALL"])
            client.add_flags(uids[:1], [f"$kw{i}" for i in range(40)])
            assert len(client.get_flags(uids[:1])[uids[0]]) >= 40
        finally:
            client.logout()
        assert list((base / "mail" / "support@example.test").glob("sdbox"))

        result = runner.invoke(mailserver_app, ["stop", "--dir", str(base)])
        assert result.exit_code == 0, result.output
        assert not server.is_running()
        result = runner.invoke(mailserver_app, ["status", "--dir", str(base)])
        assert result.exit_code == 1
    finally:
        if (base / "mailserver.json").exists():
            LocalMailServer.load(base).stop()
        shutil.rmtree(base, ignore_errors=True)


_AS_NOBODY = """
import json, sys
from pathlib import Path
from imapdesk.devtools.mailserver import LocalMailServer, free_port
server = LocalMailServer(Path(sys.argv[1]), imap_port=free_port(), imaps_port=free_port())
server.start()
try:
    user = server.add_user("solo@example.test", "pw")
    count = server.seed(user, "pw", "INBOX", [b"Subject: hi\\r\\n\\r\\nhello\\r\\n"] * 3)
    client = server.connect(user, "pw", starttls=True)
    exists = client.select_folder("INBOX")[b"EXISTS"]
    folders = sorted(name for _f, _s, name in client.list_folders())
    client.logout()
    print(json.dumps({"count": count, "exists": exists, "folders": folders}))
finally:
    server.stop()
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_runs_without_root_as_the_calling_user() -> None:
    run_as = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run(
        [*run_as, sys.executable, "-c", "import imapdesk"], cwd=REPO, check=False
    )
    if probe.returncode != 0:
        pytest.skip("this Python is not usable by `nobody` (e.g. installed under /root)")
    base = make_base_dir("imapdesk-test-nonroot-")
    os.chown(base, 65534, 65534)
    try:
        proc = subprocess.run(
            [*run_as, sys.executable, "-c", _AS_NOBODY, str(base)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": str(base)},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr + (base / "dovecot.log").read_text()
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["count"] == 3 and result["exists"] == 3
        assert {"INBOX", "Sent", "Archive", "Junk", "Trash", "Drafts"} <= set(result["folders"])
        owners = {p.stat().st_uid for p in (base / "mail").rglob("*")}
        assert owners == {65534}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_private_directory_is_opened_for_the_servers_user_only_under_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail server's processes that run as another user reach their files through our
    private directories (a 0700 `mktemp -d`, where a checkout may live): under the temp dir
    (pytest's `tmp_path` is) they get o+x; elsewhere the error names the directory and the
    fix."""
    private = tmp_path / "checkout"
    tree = private / "tree"
    tree.mkdir(parents=True)
    private.chmod(0o700)
    ensure_traversable(tree, "nobody", "Cyrus runs its processes")
    assert private.stat().st_mode & 0o777 == 0o701

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "elsewhere"))
    private.chmod(0o700)
    with pytest.raises(LocalMailServerError) as refused:
        ensure_traversable(tree, "nobody", "Cyrus runs its processes")
    assert private.stat().st_mode & 0o777 == 0o700  # left alone
    message = str(refused.value)
    assert "Cyrus runs its processes as `nobody`" in message
    assert f"chmod o+x {private}" in message
