"""mbsync (Debian `isync`) as the colleague: it mirrors the shared box to a local Maildir.

What the helpdesk did shows there (a claim is `F` in the file names, a closed conversation lies
under the Archive maildir, a read one carries `S`), and a flag changed in the Maildir and pushed
by the next mbsync run reaches the helpdesk as a change from `imap`.
"""

from __future__ import annotations

import email
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import Engine

from imapdesk.devtools.mailserver import MailAccount
from imapdesk.mail.parsing import normalize_msgid
from tests.support.mapping import (
    BASE,
    CONVERSATION,
    INBOUND,
    MAIL_CLIENT_HOLDER,
    OTHER,
    REPLY,
    TIMEOUT,
    Scene,
    Writes,
    flags_of,
    only_tidy_ups,
    open_scene,
    places,
)
from tests.support.worker import wait_for

MBSYNC = "/usr/bin/mbsync"
# IMAP system flags as mbsync writes them into Maildir file names
LETTERS = {"\\Flagged": "F", "\\Seen": "S", "\\Answered": "R", "\\Draft": "D"}


@dataclass
class LocalMail:
    """One message file in the local Maildir."""

    folder: str
    path: Path

    @property
    def letters(self) -> str:
        _base, _sep, info = self.path.name.partition(":2,")
        return info

    def set_letters(self, letters: str) -> None:
        """Rename the file to carry these flags (into cur/, as a mail client does)."""
        base = self.path.name.partition(":2,")[0]
        target = self.path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(set(letters)))}"
        self.path.rename(target)
        self.path = target


class Mbsync:
    """An mbsyncrc in a temporary directory, syncing the whole box to a Maildir there."""

    def __init__(self, root: Path, account: MailAccount) -> None:
        self.maildir = root / "Mail"
        self.maildir.mkdir(parents=True)
        self.rc = root / "mbsyncrc"
        self.rc.write_text(
            "\n".join(
                [
                    "IMAPAccount shared",
                    # the test certificate names localhost (127.0.0.1 fails the check)
                    "Host localhost",
                    f"Port {account.imaps_port}",
                    f"User {account.user}",
                    f'Pass "{account.password}"',
                    "SSLType IMAPS",
                    f"CertificateFile {account.ca_file}",
                    "",
                    "IMAPStore shared-far",
                    "Account shared",
                    "",
                    "MaildirStore shared-near",
                    f"Path {self.maildir}/",
                    f"Inbox {self.maildir}/INBOX",
                    "SubFolders Verbatim",
                    "",
                    "Channel shared",
                    "Far :shared-far:",
                    "Near :shared-near:",
                    "Patterns *",
                    "Sync All",
                    "Create Both",
                    "Expunge None",
                    "SyncState *",
                    "",
                ]
            )
        )

    def run(self) -> str:
        done = subprocess.run(
            [MBSYNC, "-c", str(self.rc), "-a"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"mbsync failed ({done.returncode}):\n{done.stderr}"
        return done.stdout + done.stderr

    def mail(self) -> dict[str, list[LocalMail]]:
        """Message-ID -> its files, in every local folder (not marked deleted: `T`)."""
        out: dict[str, list[LocalMail]] = {}
        for sub in ("cur", "new"):
            for path in sorted(self.maildir.glob(f"**/{sub}/*")):
                folder = str(path.parent.parent.relative_to(self.maildir))
                with path.open("rb") as fh:
                    header = email.message_from_binary_file(fh)["Message-ID"] or ""
                msgid = normalize_msgid(header) or path.name
                mail = LocalMail(folder, path)
                if "T" not in mail.letters:
                    out.setdefault(msgid, []).append(mail)
        return out


@pytest.fixture
def mbsync(tmp_path: Path, mail_account: MailAccount) -> Mbsync:
    if shutil.which(MBSYNC) is None and shutil.which("mbsync") is None:
        pytest.fail("mbsync is missing: install it with `apt-get install isync`")
    return Mbsync(tmp_path / "mbsync", mail_account)


@pytest.fixture
def scene(
    engine: Engine,
    db_url: str,
    tmp_path: Path,
    mail_account: MailAccount,
    imap_client: Callable[[MailAccount], IMAPClient],
    writes: Writes,
) -> Iterator[Scene]:
    with open_scene(engine, db_url, tmp_path, mail_account, imap_client, writes) as s:
        yield s


def _one(found: dict[str, list[LocalMail]], msgid: str) -> LocalMail:
    files = found.get(msgid, [])
    assert len(files) == 1, f"{msgid}: {[(m.folder, m.path.name) for m in files]}"
    return files[0]


def _letters(flags: list[str] | frozenset[str] | set[str]) -> str:
    return "".join(sorted(LETTERS[f] for f in flags if f in LETTERS))


def test_mbsync_mirrors_the_helpdesk_and_its_flag_changes_flow_back(
    scene: Scene, mbsync: Mbsync
) -> None:
    s = scene
    # the helpdesk: alice claims, reads and closes the conversation
    r = s.alice.post(f"{BASE}/{s.cid}/claim")
    assert r.status_code == 200, r.text
    s.mark_read(s.alice_id)
    r = s.alice.patch(f"{BASE}/{s.cid}", json={"status": "closed"})
    assert r.status_code == 200, r.text
    wait_for(s.outbox_done, timeout=TIMEOUT, what="the outbox drained")
    s.wait_server(
        lambda f: all(
            places(f, m) == ["Archive"] and {"\\Flagged", "\\Seen"} <= flags_of(f, m)
            for m in INBOUND
        ),
        "closed, claimed and read on the server",
    )

    mbsync.run()
    local = mbsync.mail()
    for m in INBOUND:
        mail = _one(local, m)
        assert mail.folder == "Archive", (m, mail.path)
        assert {"F", "S"} <= set(mail.letters), (m, mail.path.name)
    reply = _one(local, REPLY)
    assert reply.folder == "Sent" and {"F", "S"} <= set(reply.letters), reply.path.name
    other = _one(local, OTHER)
    assert other.folder == "INBOX" and other.letters == "", other.path.name
    # the Maildir shows what the helpdesk shows, message by message
    for message in s.conv()["messages"]:
        (location,) = message["locations"]
        mail = _one(local, message["message_id"])
        assert (mail.folder, mail.letters) == (location["folder"], _letters(location["flags"]))
    body = s.conv()
    assert (body["status"], body["claimed"], body["unread"]) == ("closed", True, False)

    # unflag the conversation in the Maildir (every copy, as mbsync shows it) and sync: released
    before = len(s.writes.writes())
    for m in CONVERSATION:
        mail = _one(local, m)
        mail.set_letters(mail.letters.replace("F", ""))
    mbsync.run()
    body = s.wait_api(lambda c: not c["claimed"], "released through mbsync")
    assert body["assignee"] is None
    released = s.wait_activity(lambda a: a["action"] == "released", "the release in the log")
    assert (released["source"], released["actor"]) == ("imap", "a mail client")
    assert released["details"]["from"] == "alice@example.test"
    found = s.on_server()
    assert all("\\Flagged" not in flags_of(found, m) for m in CONVERSATION)

    # flag and read the other conversation in the Maildir: claimed by someone via mail client
    other = _one(mbsync.mail(), OTHER)
    other.set_letters("FS")
    mbsync.run()
    body = s.wait_api(
        lambda c: c["claimed"] and not c["unread"], "claimed through mbsync", s.other_cid
    )
    assert body["assignee"] is None
    claimed = s.wait_activity(
        lambda a: a["action"] == "claimed", "the claim in the log", cid=s.other_cid
    )
    assert claimed["source"] == "imap"
    r = s.alice.post(f"{BASE}/{s.other_cid}/claim")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["holder"] == MAIL_CLIENT_HOLDER

    # a second run brings nothing new either way, and imapdesk wrote nothing back but taking
    # off the assignee keyword the release left stale (mbsync does not carry keywords)
    mbsync.run()
    s.quiet(1.0)
    assert only_tidy_ups(s.writes.writes()[before:], "$Assigned_alice")
    local = mbsync.mail()
    assert set(_one(local, OTHER).letters) == {"F", "S"}
    assert all("F" not in _one(local, m).letters for m in CONVERSATION)
