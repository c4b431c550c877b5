"""Read-back latency: from another client's STORE or MOVE until the REST API shows it, beside a
raw imapclient IDLE client's wake-up for the same change on the same server in the same run.

Dovecot holds every IDLE notification for about 500 ms (see docs/DOVECOT.md), so the raw IDLE
client is the floor: what we add on top of it is what this measures.

Set-up: a fresh Dovecot, a box with `--seed-count` synthetic messages, a fresh database, our
worker caught up (a subprocess by default, or a thread of this process), the API app under
uvicorn in a thread, two independent raw IDLE clients (INBOX and Archive, read-only, each on its
own connection in its own thread) and a third raw connection, "the colleague", which makes the
changes as a plain mail client would.

Trials alternate between two kinds, each on its own pool of conversations (toggled back and
forth on later visits):
- flag: the colleague's `UID STORE +FLAGS (\\Flagged)` (or `-FLAGS`) on the conversation's
  INBOX messages; ours: `GET /api/v1/conversations/{id}` polled every 5 ms until `claimed` is
  true (false); raw: the IDLE client's FETCH FLAGS for every one of those UIDs;
- move: the colleague's `UID MOVE` of the conversation's messages INBOX -> Archive (or back);
  ours: until `status` is `closed` (`open`); raw: EXPUNGE in the source and EXISTS in the target.
Trials start 100 ms after the previous one completed.

Then, unless `--burst-trials 0`, back-to-back pairs: the colleague flags conversation X and,
`--burst-offsets` ms after the raw IDLE client saw X (when our worker also wakes up for it),
flags conversation Y; Y is timed as above. This is a colleague working down a list.

    python -m bench.readback_latency [--trials 200] [--worker subprocess|thread]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from bench.common import (
    SeededBox,
    add_bench_mailbox,
    add_run_arguments,
    api_client,
    bench_api_token,
    command_line,
    latency_parser,
    ms,
    p50_so_far,
    percentile,
    print_failure,
    print_stats,
    print_table,
    say,
    seeded_box,
    setup_logging,
    started_worker,
    stat_row,
    verdict,
    wait_caught_up,
    wait_until,
    wall_seconds,
)
from bench.writeback_latency import (
    FLAGGED,
    Colleague,
    FolderWatcher,
    Pick,
    add_pool_argument,
    pick_conversations,
    print_notes,
    raw_clients,
    since,
)
from imapdesk.devtools.demo_data import synthetic_corpus
from imapdesk.kernel.models import Activity, ActivitySource, PendingImapAction

POLL_INTERVAL = 0.005
TRIAL_GAP = 0.1
TRIAL_TIMEOUT = 10.0
P99_TARGET = 1.0
DEFAULT_BURST_OFFSETS = "0,10,20,50,100,200"


@dataclass
class Trial:
    kind: str  # claim | release (flag), close | open (move); burst: claim | release
    conversation_id: int
    uids: int
    command: float  # the colleague's IMAP command itself, s
    raw: float | None  # s from t0: the raw IDLE client saw all of it
    ours: float | None  # s from t0: the API showed it
    recorded: float | None = None  # s from t0: the worker's Activity.created_at
    requests: int = 0
    raw_expunge: float | None = None
    raw_exists: float | None = None
    offset: float | None = None  # burst: ms after X was seen


@dataclass
class Results:
    trials: list[Trial] = field(default_factory=list)
    warmup: list[Trial] = field(default_factory=list)
    burst: list[Trial] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)  # burst: not shown within the timeout
    notes: list[str] = field(default_factory=list)
    request_seconds: list[float] = field(default_factory=list)
    buffered: int = 0


class Trials:
    def __init__(
        self,
        engine: Engine,
        http: httpx.Client,
        watchers: dict[str, FolderWatcher],
        colleague: Colleague,
        results: Results,
    ) -> None:
        self.engine = engine
        self.http = http
        self.watchers = watchers
        self.colleague = colleague
        self.results = results

    # -- the API side -----------------------------------------------------------------------
    def _poll(
        self, conversation_id: int, field_name: str, want: object, deadline: float
    ) -> tuple[float | None, int]:
        """GET the conversation every 5 ms until `field_name` is `want`: (when, requests)."""
        route = f"/api/v1/conversations/{conversation_id}"
        requests = 0
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            response = self.http.get(route)
            now = time.perf_counter()
            requests += 1
            self.results.request_seconds.append(now - sent)
            response.raise_for_status()
            if response.json().get(field_name) == want:
                return now, requests
            time.sleep(POLL_INTERVAL)
        return None, requests

    def _recorded(self, conversation_id: int, t0_wall: float, action: str) -> float | None:
        """When the worker recorded the change: the `imap` activity written after t0."""
        with Session(self.engine) as db:
            rows = db.exec(
                select(Activity.created_at, Activity.action, Activity.details).where(
                    Activity.conversation_id == conversation_id,
                    Activity.source == ActivitySource.imap,
                )
            ).all()
        times = [
            wall_seconds(created) - t0_wall
            for created, act, details in rows
            if act == action
            and wall_seconds(created) >= t0_wall - 0.001
            and (action != "status" or details.get("to") in ("closed", "open"))
        ]
        return min(times) if times else None

    # -- the changes ------------------------------------------------------------------------
    def _timed_flag(
        self, conversation_id: int, uids: list[int], flag: bool, timeout: float
    ) -> tuple[Trial, float | None]:
        """The colleague flags (unflags) `uids`, timed until the API shows the conversation
        claimed (not claimed) and the raw IDLE client saw it; (the trial, when raw saw it)."""
        t0_wall = time.time()
        t0 = time.perf_counter()
        self.colleague.flag(uids, flag)
        command = time.perf_counter() - t0
        seen, requests = self._poll(conversation_id, "claimed", flag, t0 + timeout)
        raw = self.watchers["INBOX"].wait_flag(uids, FLAGGED, flag, t0, 2.0)
        trial = Trial(
            kind="claim" if flag else "release",
            conversation_id=conversation_id,
            uids=len(uids),
            command=command,
            raw=since(raw, t0),
            ours=since(seen, t0),
            requests=requests,
        )
        trial.recorded = self._recorded(conversation_id, t0_wall, "claimed" if flag else "released")
        return trial, raw

    def flag(self, pick: Pick, timeout: float = TRIAL_TIMEOUT) -> Trial:
        flag = not pick.state
        uids = self.colleague.uids("INBOX", pick.message_ids)
        self.colleague.prepare("INBOX")
        trial, raw = self._timed_flag(pick.conversation_id, uids, flag, timeout)
        pick.state = flag
        if raw is None:
            self.results.problems.append(
                f"{trial.kind} of conversation {pick.conversation_id}: the raw IDLE client saw "
                f"no FETCH FLAGS for UIDs {uids}"
            )
        return trial

    def move(self, pick: Pick) -> Trial:
        close = not pick.state
        source, target = ("INBOX", "Archive") if close else ("Archive", "INBOX")
        uids = self.colleague.uids(source, pick.message_ids)
        self.colleague.prepare(source)
        status = "closed" if close else "open"
        t0_wall = time.time()
        t0 = time.perf_counter()
        self.colleague.move(source, uids, target)
        command = time.perf_counter() - t0
        seen, requests = self._poll(pick.conversation_id, "status", status, t0 + TRIAL_TIMEOUT)
        expunged = self.watchers[source].wait_expunged(uids, t0, 2.0)
        arrived = self.watchers[target].wait_arrivals(len(uids), t0, 2.0)
        exists = arrived[0] if arrived is not None else None
        raw = max(expunged, exists) if expunged is not None and exists is not None else None
        pick.state = close
        trial = Trial(
            kind="close" if close else "open",
            conversation_id=pick.conversation_id,
            uids=len(uids),
            command=command,
            raw=since(raw, t0),
            ours=since(seen, t0),
            requests=requests,
            raw_expunge=since(expunged, t0),
            raw_exists=since(exists, t0),
        )
        trial.recorded = self._recorded(pick.conversation_id, t0_wall, "status")
        if raw is None:
            self.results.problems.append(
                f"{trial.kind} of conversation {pick.conversation_id}: the raw IDLE clients saw "
                f"EXPUNGE {'yes' if expunged else 'no'}, EXISTS {'yes' if exists else 'no'}"
            )
        return trial

    def burst(self, first: Pick, second: Pick, offset: float) -> Trial:
        """Flag `first`; `offset` s after the raw IDLE client saw it, flag `second` (timed)."""
        flag = not first.state
        uids = self.colleague.uids("INBOX", first.message_ids)
        second_uids = self.colleague.uids("INBOX", second.message_ids)  # before t0
        self.colleague.prepare("INBOX")
        t0 = time.perf_counter()
        self.colleague.flag(uids, flag)
        first.state = flag
        seen_first = self.watchers["INBOX"].wait_flag(uids, FLAGGED, flag, t0, TRIAL_TIMEOUT)
        if seen_first is None:
            self.results.problems.append("burst: the raw IDLE client never saw the first change")
        else:
            time.sleep(max(0.0, seen_first + offset - time.perf_counter()))
        # the second change, timed; the colleague's UIDs were found before the first
        flag2 = not second.state
        trial, _raw = self._timed_flag(second.conversation_id, second_uids, flag2, TRIAL_TIMEOUT)
        second.state = flag2
        trial.offset = offset * 1000
        if trial.ours is None:
            self.results.late.append(
                f"conversation {second.conversation_id} ({trial.kind}, {offset * 1000:.0f} ms "
                f"after the previous change was seen): not in the API after {TRIAL_TIMEOUT:.0f} s"
            )
        # both in the database before the next pair (the first one is not timed)
        if not wait_until(
            lambda: self._claimed(first.conversation_id) is first.state, timeout=TRIAL_TIMEOUT
        ):
            self.results.late.append(
                f"conversation {first.conversation_id}: the first change of a pair not in the "
                f"database after {TRIAL_TIMEOUT:.0f} s (more)"
            )
        return trial

    def _claimed(self, conversation_id: int) -> bool | None:
        response = self.http.get(f"/api/v1/conversations/{conversation_id}")
        response.raise_for_status()
        value = response.json().get("claimed")
        return value if isinstance(value, bool) else None

    def check_no_write_back(self, expected: dict[str, int], picks: list[Pick]) -> None:
        """Read-back writes nothing back (no outbox rows), and records each change once."""
        ids = [p.conversation_id for p in picks]
        with Session(self.engine) as db:
            outbox = db.exec(select(func.count()).select_from(PendingImapAction)).one()
            rows = db.exec(
                select(Activity.action, Activity.details).where(
                    col(Activity.conversation_id).in_(ids),
                    Activity.source == ActivitySource.imap,
                )
            ).all()
        if outbox:
            self.results.problems.append(
                f"echo: {outbox} outbox actions written for changes read back from the mailbox"
            )
        counts: dict[str, int] = {}
        for action, details in rows:
            key = (
                f"status {details.get('from')}->{details.get('to')}"
                if action == "status"
                else action
            )
            counts[key] = counts.get(key, 0) + 1
        self.results.notes.append(
            "activities read back from the mailbox: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + " (changes made: "
            + ", ".join(f"{k} {v}" for k, v in sorted(expected.items()))
            + ")"
        )
        for key, made in expected.items():
            if counts.get(key, 0) != made:
                self.results.notes.append(
                    f"SUSPICIOUS: {counts.get(key, 0)} `{key}` activities for {made} changes"
                )
        extra = set(counts) - set(expected)
        if extra:
            self.results.notes.append(
                f"SUSPICIOUS: activities no change asked for: {sorted(extra)}"
            )


def _measure(args: argparse.Namespace, box: SeededBox) -> Results:
    results = Results()
    engine, settings = box.engine, box.settings
    mailbox_id = add_bench_mailbox(engine, settings, box.account)
    token = bench_api_token(engine, "read-back latency benchmark")
    rng = random.Random(args.seed)
    offsets = [float(x) / 1000 for x in args.burst_offsets.split(",") if x.strip()]
    with started_worker(args.worker, settings, engine, box.data_dir / "worker.log") as worker:
        wait_caught_up(worker, engine, mailbox_id, box.seeded, 180)
        burst_pool = 2 * args.pool if args.burst_trials else 0
        pools = pick_conversations(engine, mailbox_id, 2 * args.pool + burst_pool, rng)
        flag_pool, move_pool = pools[: args.pool], pools[args.pool : 2 * args.pool]
        burst_picks = pools[2 * args.pool :]
        say("worker caught up; starting the API, the raw IDLE clients and the colleague")
        with raw_clients(box.account) as raw:
            time.sleep(1.0)  # let the worker settle into IDLE
            made: dict[str, int] = {}
            with api_client(settings, engine, token) as http:
                trials = Trials(engine, http, raw.watchers, raw.colleague, results)
                total = args.warmup + args.trials
                for i in range(total):
                    pool = flag_pool if i % 2 == 0 else move_pool
                    pick = pool[(i // 2) % args.pool]
                    trial = trials.flag(pick) if i % 2 == 0 else trials.move(pick)
                    key = {"claim": "claimed", "release": "released"}.get(
                        trial.kind
                    ) or f"status {'open->closed' if trial.kind == 'close' else 'closed->open'}"
                    made[key] = made.get(key, 0) + 1
                    if trial.ours is None:
                        results.problems.append(
                            f"{trial.kind} of conversation {trial.conversation_id}: not in the "
                            f"API after {TRIAL_TIMEOUT:.0f} s"
                        )
                    (results.warmup if i < args.warmup else results.trials).append(trial)
                    if (i + 1) % 25 == 0 or i + 1 == total:
                        done = [t.ours for t in results.trials if t.ours is not None]
                        say(f"{i + 1}/{total} trials; ours p50 so far {p50_so_far(done)}")
                    raw.check()
                    time.sleep(TRIAL_GAP)
                for i in range(args.burst_trials):
                    first = burst_picks[(2 * i) % len(burst_picks)]
                    second = burst_picks[(2 * i + 1) % len(burst_picks)]
                    trial = trials.burst(first, second, offsets[i % len(offsets)])
                    for pick in (first, second):
                        key = "claimed" if pick.state else "released"
                        made[key] = made.get(key, 0) + 1
                    results.burst.append(trial)
                    if (i + 1) % 12 == 0 or i + 1 == args.burst_trials:
                        say(f"{i + 1}/{args.burst_trials} back-to-back pairs")
                    time.sleep(TRIAL_GAP)
                trials.check_no_write_back(made, flag_pool + move_pool + burst_picks)
        results.buffered += raw.buffered
    return results


# --- the report ------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: Results) -> bool:
    trials = results.trials
    print()
    print(f"command:  {command_line()}")
    print(
        f"set-up:   fresh Dovecot (Maildir, IMAPS), box with {args.seed_count} messages, "
        f"{args.db}, worker in a {args.worker}, uvicorn in a thread, httpx poller of "
        f"GET /api/v1/conversations/{{id}} every {POLL_INTERVAL * 1000:.0f} ms; raw IDLE "
        "clients on INBOX and Archive and the colleague's connection in this process"
    )
    print(
        f"trials:   {len(trials)} measured (+{len(results.warmup)} warm-up, not counted), "
        f"flag and move alternating, {TRIAL_GAP * 1000:.0f} ms apart, {args.pool} "
        "conversations per kind (1-4 messages each)"
    )
    print()
    rows: list[list[object]] = []
    names = {
        "claim": "STORE +FLAGS \\Flagged -> claimed",
        "release": "STORE -FLAGS \\Flagged -> not claimed",
        "close": "MOVE INBOX -> Archive -> closed",
        "open": "MOVE Archive -> INBOX -> open",
    }
    for kind, name in names.items():
        of_kind = [t for t in trials if t.kind == kind]
        rows.append(stat_row(f"raw IDLE: {name}", [t.raw for t in of_kind]))
        rows.append(stat_row(f"ours (API): {name}", [t.ours for t in of_kind]))
    rows.append(stat_row("raw IDLE, all", [t.raw for t in trials]))
    rows.append(stat_row("ours (API), all", [t.ours for t in trials]))
    rows.append(
        stat_row(
            "ours minus raw, per trial",
            [t.ours - t.raw for t in trials if t.ours is not None and t.raw is not None],
        )
    )
    print_stats("ms from the colleague's command", rows)
    print()
    flags = [t for t in trials if t.kind in ("claim", "release")]
    moves = [t for t in trials if t.kind in ("close", "open")]
    print_stats(
        "where the time goes (ms from t0)",
        [
            stat_row("flags: worker recorded it (Activity)", [t.recorded for t in flags]),
            stat_row("moves: worker recorded it (Activity)", [t.recorded for t in moves]),
            stat_row("moves: raw EXPUNGE in the source", [t.raw_expunge for t in moves]),
            stat_row("moves: raw EXISTS in the target", [t.raw_exists for t in moves]),
            stat_row(
                "API shown minus recorded",
                [t.ours - t.recorded for t in trials if t.ours and t.recorded is not None],
            ),
            stat_row("the colleague's command itself", [t.command for t in trials]),
            stat_row("one API poll request", results.request_seconds),
        ],
    )
    slow_moves = [t for t in moves if t.ours is not None and t.ours > 1.0]
    if moves:
        print(
            f"moves shown later than 1 s: {len(slow_moves)} of {len(moves)} "
            f"(vanish_grace_seconds: a message gone from a folder is judged after a grace period)"
        )
    raw = [t.raw for t in trials if t.raw is not None]
    ours = [t.ours for t in trials if t.ours is not None]
    if raw and ours:
        ours_p99 = percentile(ours, 99)
        print(f"p50 difference (ours - raw): {ms(percentile(ours, 50) - percentile(raw, 50))} ms")
        print("target:")
        ok_p99 = verdict(ours_p99 <= P99_TARGET)
        print(f"  ours p99 {ms(ours_p99)} ms <= {ms(P99_TARGET)} ms: {ok_p99}")
        for kind, name in names.items():
            values = [t.ours for t in trials if t.kind == kind and t.ours is not None]
            if values:
                p99 = percentile(values, 99)
                print(f"    {name}: p99 {ms(p99)} ms: {verdict(p99 <= P99_TARGET)}")
    if results.burst:
        print()
        print(
            "back-to-back: the colleague changes Y this long after the raw IDLE client saw the "
            "previous change X (when the worker wakes up for X); Y timed:"
        )
        rows = []
        for offset in sorted({t.offset for t in results.burst if t.offset is not None}):
            of = [t for t in results.burst if t.offset == offset]
            shown = [t.ours for t in of if t.ours is not None]
            late = [t for t in of if t.ours is None or t.ours > P99_TARGET]
            rows.append(
                [
                    f"{offset:.0f} ms",
                    len(of),
                    ms(percentile(shown, 50)) if shown else "-",
                    ms(max(shown)) if shown else "-",
                    len(late),
                    len(of) - len(shown),
                    ms(percentile([t.raw for t in of if t.raw is not None], 50))
                    if any(t.raw is not None for t in of)
                    else "-",
                ]
            )
        print_table(
            ["Y after X seen", "n", "ours p50", "ours max", "> 1 s", "not in 10 s", "raw p50"],
            rows,
        )
    print_notes(results.notes, results.buffered)
    problems = results.problems + results.late
    if problems:
        print_failure(f"CORRECTNESS FAILURE ({len(problems)})", problems[:20])
        return False
    print("correctness: every change reached the API, nothing was written back")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = latency_parser(__doc__, "python -m bench.readback_latency", warmup=4)
    add_pool_argument(parser)
    parser.add_argument(
        "--burst-trials",
        type=int,
        default=48,
        help="back-to-back pairs after the trials (default 48; 0: none)",
    )
    parser.add_argument(
        "--burst-offsets",
        default=DEFAULT_BURST_OFFSETS,
        help=f"ms after X was seen when Y is made, cycled (default {DEFAULT_BURST_OFFSETS})",
    )
    parser.add_argument("--seed", type=int, default=1, help="picks the conversations")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.trials < 2 or args.pool < 1:
        parser.error("--trials must be at least 2 and --pool positive")
    setup_logging(args.verbose)
    # the raw IDLE clients share this process with uvicorn and the poller: a short GIL switch
    # interval keeps their wake-up timestamps from waiting behind them
    sys.setswitchinterval(0.001)
    corpus = synthetic_corpus(args.seed_count, seed=7)
    with seeded_box("imapdesk-bench-readback-", args.keep, args.db, corpus) as box:
        results = _measure(args, box)
    ok = report(args, results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
