"""Catch-up after downtime: the worker is stopped, other clients change flags and move mail,
the worker is started again; how long until the database matches the mailbox again?

Per server (`--server`): a fresh Dovecot (Maildir), `--count` synthetic messages in INBOX, a fresh
database; the worker syncs them all and is stopped (SIGTERM). While it is down, "the colleague"
(a raw imapclient connection) makes `--flag-changes` flag changes (`+FLAGS \\Flagged` or
`+FLAGS \\Seen`, half each, on distinct random INBOX messages, one `UID STORE` each) and `--moves`
moves (`UID MOVE` of distinct random INBOX messages to Archive, one each). Then the worker is
started again and the database is polled until:

1. every location matches the server: for each folder the worker follows, the same UIDs with
   the same flags (`\\Recent` aside) as a FETCH of the server made while the worker was down;
2. the helpdesk state agrees with it: each message's `seen` with its `\\Seen`, each
   conversation's `claimed` with `\\Flagged` on any of its messages, `unread` with its inbound
   messages, `status` `closed` where all its inbound messages sit in Archive and `open` where
   one is still in INBOX.

The match is verified against a fresh FETCH of the server afterwards (a mismatch is a
correctness failure, exit status 1). The normal server has CONDSTORE/QRESYNC (flag changes come
with `CHANGEDSINCE`); the trimmed one (`trim_capabilities=("CONDSTORE", "QRESYNC")`, as Exchange
Online) makes the worker rescan the flags of every folder. Baseline, for context: a raw
imapclient `SEARCH ALL` + `FETCH FLAGS` of every message of those folders.

    python -m bench.catchup [--count 10000] [--server both|normal|trimmed]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bench.common import (
    FOLLOWED_ROLES,
    SeededBox,
    add_bench_mailbox,
    add_db_argument,
    add_run_arguments,
    add_worker_argument,
    bench_parser,
    command_line,
    connect_imaps,
    followed_folders_caught_up,
    print_failure,
    print_table,
    say,
    seeded_box,
    setup_logging,
    start_worker,
    wait_until,
    wall_seconds,
)
from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.kernel.models import (
    Conversation,
    ConversationStatus,
    Direction,
    Folder,
    FolderRole,
    Mailbox,
    Message,
    MessageLocation,
)

TRIMMED = ("CONDSTORE", "QRESYNC")
POLL_GATE = 0.05  # cheap checks (folders synced since the restart)
POLL_COMPARE = 0.1  # full comparisons
CONVERSATION_TIMEOUT = 60.0

Snapshot = dict[str, dict[int, frozenset[str]]]  # folder -> UID -> flags


# --- the server ------------------------------------------------------------------------------


def server_snapshot(client: IMAPClient, folders: list[str]) -> Snapshot:
    """UIDs and flags of every message of these folders, as a plain client reads them."""
    out: Snapshot = {}
    for folder in folders:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        data = client.fetch(uids, ["FLAGS"]) if uids else {}
        out[folder] = {
            uid: frozenset(
                f.decode() if isinstance(f, bytes) else str(f)
                for f in item.get(b"FLAGS", ())
                if f not in (b"\\Recent", "\\Recent")
            )
            for uid, item in data.items()
        }
        client.unselect_folder()
    return out


# --- the database ----------------------------------------------------------------------------


def followed_folder_names(engine: Engine, mailbox_id: int) -> list[str]:
    with Session(engine) as db:
        rows = db.exec(
            select(Folder.name, Folder.role).where(Folder.mailbox_id == mailbox_id)
        ).all()
    return sorted(name for name, role in rows if FolderRole(role) in FOLLOWED_ROLES)


def db_snapshot(engine: Engine, mailbox_id: int) -> Snapshot:
    out: Snapshot = {}
    with Session(engine) as db:
        for name in followed_folder_names(engine, mailbox_id):
            out[name] = {}
        rows = db.exec(
            select(Folder.name, MessageLocation.uid, MessageLocation.flags)
            .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
            .where(Folder.mailbox_id == mailbox_id)
        ).all()
    for name, uid, flags in rows:
        out.setdefault(name, {})[int(uid)] = frozenset(f for f in (flags or ()) if f != "\\Recent")
    return out


def differences(server: Snapshot, db: Snapshot, limit: int = 10) -> tuple[int, list[str]]:
    """How many locations differ, and the first few."""
    count = 0
    shown: list[str] = []
    for folder in sorted(set(server) | set(db)):
        want, have = server.get(folder, {}), db.get(folder, {})
        for uid in sorted(set(want) | set(have)):
            if want.get(uid) == have.get(uid):
                continue
            count += 1
            if len(shown) < limit:
                if uid not in have:
                    shown.append(
                        f"{folder} UID {uid}: on the server {sorted(want[uid])}, not in db"
                    )
                elif uid not in want:
                    shown.append(f"{folder} UID {uid}: in the database, not on the server")
                else:
                    shown.append(
                        f"{folder} UID {uid}: server {sorted(want[uid])}, db {sorted(have[uid])}"
                    )
    return count, shown


def helpdesk_mismatches(engine: Engine, mailbox_id: int, limit: int = 10) -> tuple[int, list[str]]:
    """Where messages' and conversations' state disagrees with their locations' flags and
    folders (the locations themselves having been checked against the server)."""
    with Session(engine) as db:
        folders = {
            f.id: (f.name, FolderRole(f.role))
            for f in db.exec(select(Folder).where(Folder.mailbox_id == mailbox_id))
        }
        places: dict[int, list[tuple[FolderRole, frozenset[str]]]] = {}
        for message_pk, folder_id, flags in db.exec(
            select(MessageLocation.message_id, MessageLocation.folder_id, MessageLocation.flags)
        ):
            if folder_id in folders and FolderRole(folders[folder_id][1]) in FOLLOWED_ROLES:
                places.setdefault(message_pk, []).append(
                    (folders[folder_id][1], frozenset(flags or ()))
                )
        messages = db.exec(
            select(Message.id, Message.conversation_id, Message.direction, Message.seen)
        ).all()
        conversations = {
            c.id: c
            for c in db.exec(
                select(Conversation).where(
                    Conversation.mailbox_id == mailbox_id,
                    col(Conversation.merged_into_id).is_(None),
                )
            )
        }
    count = 0
    shown: list[str] = []

    def bad(text: str) -> None:
        nonlocal count
        count += 1
        if len(shown) < limit:
            shown.append(text)

    by_conversation: dict[int, list[tuple[int, Direction, list]]] = {}
    for pk, cid, direction, seen in messages:
        where = places.get(pk, [])
        if where and seen != any("\\Seen" in flags for _, flags in where):
            bad(f"message {pk}: seen={seen}, its \\Seen says otherwise")
        if cid is not None:
            by_conversation.setdefault(cid, []).append((pk, Direction(direction), where))
    for cid, conversation in conversations.items():
        msgs = by_conversation.get(cid or 0, [])
        # a copy in Sent claims only where the conversation has no other
        # (imapdesk/domain/mailstate.py)
        located = [(role, flags) for _, _, where in msgs for role, flags in where]
        only_sent = all(FolderRole(role) == FolderRole.sent for role, _ in located)
        flagged = any(
            "\\Flagged" in flags and (only_sent or FolderRole(role) != FolderRole.sent)
            for role, flags in located
        )
        if conversation.claimed != flagged:
            bad(f"conversation {cid}: claimed={conversation.claimed}, \\Flagged says {flagged}")
        inbound = [where for _, d, where in msgs if d == Direction.inbound and where]
        unread = any(not any("\\Seen" in flags for _, flags in where) for where in inbound)
        if conversation.unread != unread:
            bad(f"conversation {cid}: unread={conversation.unread}, \\Seen says {unread}")
        roles = [{role for role, _ in where} for where in inbound]
        expected: ConversationStatus | None = None
        if any(FolderRole.inbox in r for r in roles):
            expected = ConversationStatus.open
        elif roles and all(r == {FolderRole.archive} for r in roles):
            expected = ConversationStatus.closed
        if expected is not None and ConversationStatus(conversation.status) != expected:
            bad(f"conversation {cid}: status={conversation.status}, its folders say {expected}")
    return count, shown


def wall_after(value: datetime | None, t: float) -> bool:
    return value is not None and wall_seconds(value) >= t


def folders_synced_since(engine: Engine, mailbox_id: int, t_wall: float) -> bool:
    with Session(engine) as db:
        rows = db.exec(
            select(Folder.role, Folder.last_sync_at).where(Folder.mailbox_id == mailbox_id)
        ).all()
    followed = [at for role, at in rows if FolderRole(role) in FOLLOWED_ROLES]
    return bool(followed) and all(wall_after(at, t_wall) for at in followed)


def connected_since(engine: Engine, mailbox_id: int, t_wall: float) -> bool:
    with Session(engine) as db:
        mailbox = db.get(Mailbox, mailbox_id)
    return mailbox is not None and wall_after(mailbox.last_connected_at, t_wall)


# --- one server ------------------------------------------------------------------------------


@dataclass
class Outcome:
    server: str
    count: int
    seed_seconds: float = 0.0
    initial_sync: float | None = None
    changes_seconds: float = 0.0
    flag_changes: int = 0
    moves: int = 0
    baseline: list[float] = field(default_factory=list)
    connected: float | None = None  # s from the restart: the mailbox probed
    synced: float | None = None  # every followed folder synced once
    locations: float | None = None  # every location matches
    helpdesk: float | None = None  # the helpdesk state agrees too
    compares: int = 0
    compare_seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def run_server(args: argparse.Namespace, name: str) -> Outcome:
    outcome = Outcome(server=name, count=args.count)
    with seeded_box(
        f"imapdesk-bench-catchup-{name}-",
        args.keep,
        args.db,
        synthetic_corpus(args.count, seed=args.seed),
        label=f"[{name}] ",
        trim=TRIMMED if name == "trimmed" else (),
    ) as box:
        outcome.seed_seconds = box.seed_seconds
        _measure(args, outcome, box)
    return outcome


def _measure(args: argparse.Namespace, outcome: Outcome, box: SeededBox) -> None:
    name = outcome.server
    account, settings, engine, data_dir = box.account, box.settings, box.engine, box.data_dir
    mailbox_id = add_bench_mailbox(engine, settings, account)
    timeout = args.count / 20 + 120

    # 1. the worker takes everything in, and is stopped
    started = time.perf_counter()
    worker = start_worker(args.worker, settings, engine, data_dir / "worker-1.log")
    try:
        done = wait_until(
            lambda: (
                followed_folders_caught_up(engine, mailbox_id)
                and _inbox_count(engine, mailbox_id) == args.count
            ),
            timeout=timeout,
            interval=0.2,
            alive=worker.alive,
        )
        if not done:
            raise RuntimeError(
                f"[{name}] the worker did not take in {args.count} messages\n{worker.log_tail()}"
            )
        outcome.initial_sync = time.perf_counter() - started
        say(f"[{name}] initial sync done in {outcome.initial_sync:.1f} s; stopping the worker")
    finally:
        worker.stop()
    if worker.alive():
        raise RuntimeError(f"[{name}] the worker did not stop")

    # 2. the colleague changes flags and moves mail meanwhile
    rng = random.Random(args.seed)
    colleague = connect_imaps(account)
    try:
        colleague.select_folder("INBOX")
        inbox = sorted(colleague.search("ALL"))
        flagged = rng.sample(inbox, min(args.flag_changes, len(inbox)))
        moved = rng.sample(inbox, min(args.moves, len(inbox)))
        t = time.perf_counter()
        for i, uid in enumerate(flagged):
            colleague.add_flags([uid], ["\\Flagged" if i % 2 == 0 else "\\Seen"])
        for uid in moved:
            colleague.move([uid], "Archive")
        outcome.changes_seconds = time.perf_counter() - t
        outcome.flag_changes, outcome.moves = len(flagged), len(moved)
        say(
            f"[{name}] {len(flagged)} flag changes and {len(moved)} moves made in "
            f"{outcome.changes_seconds:.1f} s"
        )
    finally:
        with contextlib.suppress(Exception):
            colleague.logout()

    # 3. baseline: a plain client reads the flags of every message of those folders
    folders = followed_folder_names(engine, mailbox_id)
    reader = connect_imaps(account)
    try:
        for _ in range(3):
            t = time.perf_counter()
            snapshot = server_snapshot(reader, folders)
            outcome.baseline.append(time.perf_counter() - t)
    finally:
        with contextlib.suppress(Exception):
            reader.logout()
    total = sum(len(v) for v in snapshot.values())
    say(f"[{name}] the server holds {total} messages in {len(folders)} folders; restarting")

    # 4. restart; poll the database until it matches
    restart_wall = time.time()
    t0 = time.perf_counter()
    worker = start_worker(args.worker, settings, engine, data_dir / "worker-2.log")
    try:

        def mark(attr: str, predicate: object) -> None:
            if getattr(outcome, attr) is None and callable(predicate) and predicate():
                setattr(outcome, attr, time.perf_counter() - t0)

        deadline = t0 + timeout
        while time.perf_counter() < deadline and worker.alive():
            mark("connected", lambda: connected_since(engine, mailbox_id, restart_wall))
            if outcome.synced is None:
                mark("synced", lambda: folders_synced_since(engine, mailbox_id, restart_wall))
                if outcome.synced is None:
                    time.sleep(POLL_GATE)
                    continue
            t = time.perf_counter()
            count, _ = differences(snapshot, db_snapshot(engine, mailbox_id))
            outcome.compare_seconds.append(time.perf_counter() - t)
            outcome.compares += 1
            if count == 0:
                outcome.locations = t - t0  # the state read at the start of the comparison
                break
            time.sleep(POLL_COMPARE)
        if outcome.locations is not None:
            h_deadline = time.perf_counter() + CONVERSATION_TIMEOUT
            while time.perf_counter() < h_deadline and worker.alive():
                t = time.perf_counter()
                count, _ = helpdesk_mismatches(engine, mailbox_id)
                if count == 0:
                    outcome.helpdesk = t - t0
                    break
                time.sleep(POLL_COMPARE)
        say(f"[{name}] verifying against a fresh FETCH of the server")
        reader = connect_imaps(account)
        try:
            fresh = server_snapshot(reader, folders)
        finally:
            with contextlib.suppress(Exception):
                reader.logout()
        count, shown = differences(fresh, db_snapshot(engine, mailbox_id))
        if count:
            outcome.problems.append(
                f"{count} locations differ from a fresh FETCH of the server, e.g.:"
            )
            outcome.problems.extend(f"  {s}" for s in shown)
        elif outcome.locations is None:
            outcome.problems.append(
                f"the database matched the server only after the {timeout:.0f} s timeout"
            )
        h_count, h_shown = helpdesk_mismatches(engine, mailbox_id)
        if h_count:
            outcome.problems.append(
                f"{h_count} helpdesk states disagree with the mailbox after "
                f"{CONVERSATION_TIMEOUT:.0f} s more, e.g.:"
            )
            outcome.problems.extend(f"  {s}" for s in h_shown)
        if not worker.alive():
            outcome.problems.append(f"the worker died\n{worker.log_tail()}")
    finally:
        worker.stop()


def _inbox_count(engine: Engine, mailbox_id: int) -> int:
    with Session(engine) as db:
        row = db.exec(
            select(Folder.message_count).where(
                Folder.mailbox_id == mailbox_id, Folder.name == "INBOX"
            )
        ).first()
    return int(row or 0)


# --- the report ------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(args: argparse.Namespace, outcomes: list[Outcome]) -> bool:
    print()
    print(f"command:  {command_line()}")
    print(
        f"set-up:   per server a fresh Dovecot (Maildir, IMAPS) and {args.db} database, "
        f"{args.count} synthetic messages in INBOX, worker in a {args.worker}; while it is "
        f"stopped: {args.flag_changes} flag changes (+\\Flagged / +\\Seen alternating, one "
        f"UID STORE each) and {args.moves} moves INBOX -> Archive (one UID MOVE each)"
    )
    print()
    rows = []
    for o in outcomes:
        caps = "CONDSTORE, QRESYNC" if o.server == "normal" else "no CONDSTORE/QRESYNC"
        base = statistics.median(o.baseline) if o.baseline else None
        rows.append(
            [
                f"{o.server} ({caps})",
                _s(base),
                _s(min(o.baseline) if o.baseline else None),
                _s(o.connected),
                _s(o.synced),
                _s(o.locations),
                _s(o.helpdesk),
                _s(o.locations - o.connected if o.locations and o.connected else None),
                f"{(o.locations / base):.1f}x" if o.locations and base else "-",
            ]
        )
    print_table(
        [
            "seconds",
            "baseline med",
            "min",
            "probed",
            "folders synced",
            "locations match",
            "helpdesk agrees",
            "match - probed",
            "match/baseline",
        ],
        rows,
    )
    print()
    print(
        "baseline: one imapclient connection, SELECT, SEARCH ALL and FETCH FLAGS of every "
        "folder the worker follows (3 runs, median and min). From the restart (process start, "
        "so Python start-up and connecting count): the mailbox probed, every followed folder "
        "synced once, every location matching the server, the helpdesk state agreeing; "
        "match - probed leaves out Python start-up, migrations check and the probe."
    )
    for o in outcomes:
        print(
            f"[{o.server}] seeding {o.seed_seconds:.1f} s, initial sync of {o.count} messages "
            f"{_s(o.initial_sync)} s, changes {o.changes_seconds:.1f} s; "
            f"{o.compares} full comparisons of ~"
            + (
                f"{statistics.median(o.compare_seconds) * 1000:.0f} ms each"
                if o.compare_seconds
                else "-"
            )
        )
    ok = True
    for o in outcomes:
        if o.problems:
            ok = False
            print_failure(f"CORRECTNESS FAILURE [{o.server}]", o.problems[:30])
    if ok:
        print(
            "correctness: every location matches a fresh FETCH of the server, and the helpdesk "
            "state agrees with it"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "python -m bench.catchup")
    parser.add_argument("--count", type=int, default=10_000, help="messages (default 10000)")
    parser.add_argument("--flag-changes", type=int, default=1000, help="default 1000")
    parser.add_argument("--moves", type=int, default=200, help="default 200")
    parser.add_argument(
        "--server", choices=("both", "normal", "trimmed"), default="both", help="default both"
    )
    add_db_argument(parser)
    add_worker_argument(parser, help=None)
    parser.add_argument("--seed", type=int, default=1, help="the corpus and the changes")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.count < 1 or args.flag_changes < 0 or args.moves < 0:
        parser.error("--count must be positive, the changes not negative")
    setup_logging(args.verbose)
    servers = ["normal", "trimmed"] if args.server == "both" else [args.server]
    outcomes = [run_server(args, s) for s in servers]
    say("done")
    return 0 if report(args, outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
