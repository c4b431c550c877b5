"""Which folder plays which role (imapdesk/mail/imap/folders.py), on the folder lists real
servers show: Dovecot as packaged, Courier, Cyrus and hosting panels (`INBOX.` and `.`),
Exchange, Gmail, localised Outlook; and the folder settings an admin gives."""

from __future__ import annotations

import pytest

from imapdesk.domain.mailboxes.folders import folder_problems, set_folder_names, setup_record
from imapdesk.kernel.errors import InvalidInput
from imapdesk.kernel.models import Mailbox
from imapdesk.mail.imap.folders import (
    FolderChoice,
    FolderSetup,
    ListedFolder,
    Namespace,
    choose_folders,
    find_folder,
)

DOVECOT = Namespace("", "/")
HOSTING = Namespace("INBOX.", ".")


def listed(
    separator: str, *names: str, special: dict[str, str] | None = None
) -> list[ListedFolder]:
    special = special or {}
    return [ListedFolder(n, special.get(n), separator) for n in ("INBOX", *names)]


def chosen(choices: dict[str, FolderChoice]) -> dict[str, tuple[str, str]]:
    return {role: (c.name, c.found_by) for role, c in choices.items()}


def test_dovecot_as_packaged_special_use_wins_and_ours_are_created_at_the_top() -> None:
    folders = listed(
        "/",
        "Sent",
        "Archive",
        "Junk",
        "Trash",
        "Drafts",
        "Spam",  # another client's folder of that name: the \Junk one wins
        special={"Sent": "sent", "Archive": "archive", "Junk": "junk", "Trash": "trash"},
    )
    assert chosen(choose_folders(folders, DOVECOT)) == {
        "sent": ("Sent", "special-use"),
        "archive": ("Archive", "special-use"),
        "junk": ("Junk", "special-use"),
        "trash": ("Trash", "special-use"),
        "pending": ("Pending", "default"),
        "notes": ("Notes", "default"),
    }


def test_courier_cyrus_and_hosting_panels_everything_under_inbox_by_name() -> None:
    folders = listed(".", "INBOX.Sent", "INBOX.Trash", "INBOX.spam", "INBOX.Drafts")
    choices = choose_folders(folders, HOSTING)
    assert chosen(choices) == {
        "sent": ("INBOX.Sent", "name"),
        "archive": ("INBOX.Archive", "default"),
        "junk": ("INBOX.spam", "name"),
        "trash": ("INBOX.Trash", "name"),
        "pending": ("INBOX.Pending", "default"),
        "notes": ("INBOX.Notes", "default"),
    }
    assert [c.exists for c in choices.values()] == [True, False, True, True, False, False]


def test_inbox_children_on_a_server_without_a_prefix_and_names_in_any_case() -> None:
    folders = listed("/", "INBOX/Sent Messages", "INBOX/Deleted Messages", "INBOX/JUNK")
    assert chosen(choose_folders(folders, DOVECOT))["sent"] == ("INBOX/Sent Messages", "name")
    assert chosen(choose_folders(folders, DOVECOT))["trash"] == ("INBOX/Deleted Messages", "name")
    assert chosen(choose_folders(folders, DOVECOT))["junk"] == ("INBOX/JUNK", "name")


def test_exchange_and_outlook_names_in_english_german_and_italian() -> None:
    english = listed("/", "Sent Items", "Deleted Items", "Junk E-mail", "Archive")
    assert {r: n for r, (n, _how) in chosen(choose_folders(english, DOVECOT)).items()} == {
        "sent": "Sent Items",
        "archive": "Archive",
        "junk": "Junk E-mail",
        "trash": "Deleted Items",
        "pending": "Pending",
        "notes": "Notes",
    }
    german = listed("/", "Gesendete Objekte", "Gelöschte Elemente", "Junk-E-Mail", "Archiv")
    assert [c.name for c in choose_folders(german, DOVECOT).values()][:4] == [
        "Gesendete Objekte",
        "Archiv",
        "Junk-E-Mail",
        "Gelöschte Elemente",
    ]
    italian = listed(
        ".", "INBOX.Posta inviata", "INBOX.Posta eliminata", "INBOX.Posta indesiderata"
    )
    names = {r: c.name for r, c in choose_folders(italian, HOSTING).items()}
    assert (names["sent"], names["trash"], names["junk"]) == (
        "INBOX.Posta inviata",
        "INBOX.Posta eliminata",
        "INBOX.Posta indesiderata",
    )


def test_gmail_system_folders_by_special_use_and_by_name() -> None:
    folders = listed(
        "/",
        "[Gmail]/Sent Mail",
        "[Gmail]/Spam",
        "[Gmail]/Trash",
        "[Gmail]/All Mail",
        special={"[Gmail]/Sent Mail": "sent", "[Gmail]/Trash": "trash"},
    )
    choices = chosen(choose_folders(folders, DOVECOT))
    assert choices["sent"] == ("[Gmail]/Sent Mail", "special-use")
    assert choices["trash"] == ("[Gmail]/Trash", "special-use")
    assert choices["junk"] == ("[Gmail]/Spam", "name")
    # All Mail holds everything: never the archive of closed conversations
    assert choices["archive"] == ("Archive", "default")


def test_the_preferred_name_wins_and_deeper_folders_are_not_taken() -> None:
    folders = listed("/", "Deleted Items", "Trash", "Projects/Sent", "Customers/Archive")
    choices = chosen(choose_folders(folders, DOVECOT))
    assert choices["trash"] == ("Trash", "name")
    assert choices["sent"] == ("Sent", "default")
    assert choices["archive"] == ("Archive", "default")


def test_a_folder_outside_the_personal_namespace_is_never_taken() -> None:
    folders = [*listed(".", "INBOX.Sent"), ListedFolder("shared.Trash", None, ".")]
    assert chosen(choose_folders(folders, HOSTING))["trash"] == ("INBOX.Trash", "default")


def test_an_admins_setting_wins_as_listed_or_relative_to_the_prefix() -> None:
    folders = listed(".", "INBOX.Sent", "INBOX.Done", special={"INBOX.Sent": "sent"})
    settings = {"archive": "done", "pending": "Waiting", "sent": "INBOX.Outgoing", "junk": " "}
    choices = choose_folders(folders, HOSTING, settings)
    assert chosen(choices)["archive"] == ("INBOX.Done", "setting")  # as listed, any case
    assert (choices["pending"].name, choices["pending"].exists) == ("INBOX.Waiting", False)
    assert (choices["sent"].name, choices["sent"].found_by) == ("INBOX.Outgoing", "setting")
    assert chosen(choices)["junk"] == ("INBOX.Junk", "default")  # blank: not set
    # a folder set for one role is not taken by name for another
    taken = choose_folders(listed("/", "Trash"), DOVECOT, {"archive": "Trash"})
    assert chosen(taken)["archive"] == ("Trash", "setting")
    assert chosen(taken)["trash"] == ("Trash", "taken")
    # even one a special-use attribute names
    marked = listed("/", "Archive", special={"Archive": "archive"})
    shared = chosen(choose_folders(marked, DOVECOT, {"pending": "Archive"}))
    assert (shared["pending"], shared["archive"]) == (("Archive", "setting"), ("Archive", "taken"))


def test_namespace_names() -> None:
    assert HOSTING.full_name("Pending") == "INBOX.Pending"
    assert HOSTING.full_name("INBOX.Pending") == "INBOX.Pending"
    assert HOSTING.full_name("inbox.Pending") == "inbox.Pending"
    assert HOSTING.full_name("INBOX") == "INBOX"
    assert HOSTING.relative("INBOX.Sent") == "Sent"
    assert HOSTING.relative("shared.Sent") is None
    assert DOVECOT.full_name("Pending") == "Pending"
    assert Namespace.of(HOSTING.as_dict()) == HOSTING
    assert Namespace.of(None) == DOVECOT
    folders = listed(".", "INBOX.Sent")
    assert find_folder("sent", folders, HOSTING) == "INBOX.Sent"
    assert find_folder("Missing", folders, HOSTING) is None


def test_folder_settings_are_checked_and_problems_say_what_to_set() -> None:
    box = Mailbox(name="support", address="s@example.test", imap_host="h", username="u",
                  password_encrypted="x")  # fmt: skip
    set_folder_names(box, {"pending": " INBOX.Waiting ", "junk": "Spam"})
    assert box.folder_names == {"junk": "Spam", "pending": "INBOX.Waiting"}
    set_folder_names(box, {"junk": ""})  # cleared: found on the server again
    assert box.folder_names == {"pending": "INBOX.Waiting"}
    with pytest.raises(InvalidInput, match="INBOX cannot be the archive folder"):
        set_folder_names(box, {"archive": "inbox"})
    with pytest.raises(InvalidInput, match="both the pending and the trash folder"):
        set_folder_names(box, {"trash": "inbox.waiting"})
    with pytest.raises(InvalidInput, match="not a folder name"):
        set_folder_names(box, {"notes": "a\r\nb"})
    with pytest.raises(InvalidInput, match="unknown folder role"):
        set_folder_names(box, {"drafts": "Drafts"})

    setup = FolderSetup(
        HOSTING,
        listed(".", "INBOX.Sent"),
        choose_folders(listed(".", "INBOX.Sent"), HOSTING, {"pending": "Support/Waiting"}),
        refused={"pending": "[CANNOT] Invalid mailbox name: Name must not have '/' characters"},
    )
    record = setup_record(setup)
    assert record["namespace"] == {"prefix": "INBOX.", "separator": "."}
    assert record["folders"]["sent"] == {"name": "INBOX.Sent", "exists": True, "found_by": "name"}
    (problem,) = folder_problems(record)
    text = problem.describe("support")
    for words in ("pending folder INBOX.Support/Waiting", "must not have '/'", "--pending-folder"):
        assert words in text, text
