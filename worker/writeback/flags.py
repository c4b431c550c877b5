"""Flag stores: one change, one write, and keywords only where the server keeps them.

For a `flags` action each folder's messages are read first (`UID FETCH FLAGS MODSEQ`), only
those that still need the change are written, in one `UID STORE` per folder and direction, and
a replayed action that already reached the server writes nothing. With CONDSTORE the STORE
carries `UNCHANGEDSINCE`; messages reported `MODIFIED` are read again and decided again, never
blindly retried.

A keyword the folder does not keep is a decision, not a retry. It is not sent when the folder
was recorded refusing it before, when the folder takes no new keywords (PERMANENTFLAGS without
`\\*` and without it), or when the folder is at the server's known limit of distinct keywords
(`keyword_limit`: Dovecot on Maildir 26, Cyrus 100; on Maildir a keyword listed 27th or later
is not kept either). A STORE the server answers with NO naming flags or keywords is sent again
without the keywords, then each keyword alone: the system flags (the claim) reach the mailbox
at once, and the keywords it refuses are recorded with its words. Every added keyword is read
back after the STORE. Whatever was not kept is in `Outcome.refused` (`recording` keeps it);
the action itself is done, so nothing of its conversation waits behind it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from imapdesk.domain.mailboxes.keywords import Refusal
from imapdesk.domain.mailstate import is_atom, keyword_limit, keywords_kept
from imapdesk.kernel.models import KeywordRefusal
from imapdesk.mail.imap import ImapReply, ImapSession, MessageFlags
from imapdesk.worker.writeback.failures import WriteBackError
from imapdesk.worker.writeback.plan import (
    FolderView,
    LocationUpdate,
    Outcome,
    Plan,
    Target,
    by_folder,
    select_read_write,
)

# rounds of "changed concurrently, read again, decide again" before the attempt gives up
MAX_REDECIDE_ROUNDS = 3
# system flags the write-back may store (\Deleted never: imapdesk does not delete mail)
STORABLE_SYSTEM_FLAGS = frozenset({"\\seen", "\\flagged", "\\answered", "\\draft"})

# a NO that refuses flags or keywords (Cyrus: "Too many user flags in mailbox"; Dovecot:
# "[CANNOT] Keyword length too long"), unless its code says the trouble is passing
_NAMES_KEYWORDS = re.compile(r"flag|keyword|\[LIMIT\]|\[CANNOT\]", re.I)
_PASSING = re.compile(r"\[(UNAVAILABLE|INUSE|SERVERBUG|EXPUNGEISSUED|CORRUPTION)\]", re.I)


class StoreRefused(WriteBackError):
    """The server answered a STORE with NO."""

    def __init__(self, view: FolderView, reply: ImapReply) -> None:
        super().__init__(f"{view.name}: {reply.command} refused: {reply.said}")
        self.reply = reply

    @property
    def names_keywords(self) -> bool:
        said = self.reply.said
        return bool(_NAMES_KEYWORDS.search(said)) and not _PASSING.search(said)


class FlagStores:
    """Applies `flags` actions: add and remove flags on the locations of the plan."""

    def __init__(self, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.log = log

    def apply(self, imap: ImapSession, plan: Plan, outcome: Outcome) -> None:
        add = _flag_list(plan.payload.get("add"))
        remove = _flag_list(plan.payload.get("remove"))
        for flag in add:
            if flag.startswith("\\") and flag.lower() not in STORABLE_SYSTEM_FLAGS:
                raise WriteBackError(f"the flag {flag} is not written back", permanent=True)
        remove = [f for f in remove if not f.startswith("\\") or f.lower() in STORABLE_SYSTEM_FLAGS]
        keywords = keywords_kept(plan.capabilities)
        limit = keyword_limit(plan.capabilities)
        add_system = [f for f in add if f.startswith("\\")]
        add_keywords = [f for f in add if not f.startswith("\\")] if keywords else []
        remove_list = [f for f in remove if f.startswith("\\") or keywords]
        if not keywords and len(add_system) < len(add):
            self.log.debug("action %d: the mailbox keeps no keywords", plan.action_id)
        gone = 0
        for targets in by_folder(plan.targets).values():
            first = targets[0]
            view = select_read_write(imap, first.folder, first.folder_uidvalidity)
            add_here = list(add_system)
            for keyword in add_keywords:
                refusal = plan.not_kept(view.name, keyword) or keyword_refused(view, keyword, limit)
                if refusal is not None:
                    outcome.refused.append(refusal)
                    continue
                view.admit(keyword)
                add_here.append(keyword)
            gone += self._store_folder(imap, view, targets, add_here, remove_list, outcome)
        if gone:
            # moved or expunged by someone else: applied to the rest; once the read side has
            # found them (or seen them go), the retry writes only what is still missing
            raise WriteBackError(
                f"{gone} messages are no longer where the database has them; retrying once "
                "the read side has caught up"
            )

    def _store_folder(
        self,
        imap: ImapSession,
        view: FolderView,
        targets: list[Target],
        add: Sequence[str],
        remove: Sequence[str],
        outcome: Outcome,
    ) -> int:
        """Apply the change to one folder's messages; returns how many of them are gone."""
        by_uid = {t.uid: t for t in targets}
        current = imap.fetch_flags(list(by_uid))
        gone = sorted(set(by_uid) - set(current))
        if gone:
            self.log.info("%s: UID %s gone meanwhile", view.name, ",".join(map(str, gone)))
        for uid, seen in current.items():
            known = by_uid[uid].modseq
            if seen.modseq is not None and known is not None and seen.modseq > known:
                self.log.info(
                    "%s: UID %d was changed by someone else (MODSEQ %d -> %d): deciding on "
                    "what it has now",
                    view.name,
                    uid,
                    known,
                    seen.modseq,
                )
        written: set[int] = set()
        refused_before = len(outcome.refused)
        written |= self._add(imap, view, add, current, outcome)
        written |= self._store(imap, view, "-", remove, current, outcome)
        if written:
            current.update(imap.fetch_flags(sorted(written)))
        refused_now = {r.keyword.lower() for r in outcome.refused[refused_before:]}
        added_keywords = [k for k in add if not k.startswith("\\") and k.lower() not in refused_now]
        for keyword in added_keywords:
            lost = [uid for uid, s in current.items() if keyword.lower() not in _lower(s.flags)]
            if lost:
                self.log.warning(
                    "%s: keyword %s did not stick on UID %s: kept in the database only",
                    view.name,
                    keyword,
                    ",".join(map(str, lost)),
                )
                view.refuse(keyword)
                outcome.refused.append(
                    Refusal(
                        view.name,
                        keyword,
                        KeywordRefusal.not_kept,
                        f"read back without it on UID {','.join(map(str, lost[:20]))}",
                    )
                )
        for uid, seen in current.items():
            outcome.updates.append(
                LocationUpdate(
                    by_uid[uid].location_id,
                    flags=sorted(f for f in seen.flags if f.lower() != "\\recent"),
                    modseq=seen.modseq,
                )
            )
        return len(gone)

    def _add(
        self,
        imap: ImapSession,
        view: FolderView,
        add: Sequence[str],
        current: dict[int, MessageFlags],
        outcome: Outcome,
    ) -> set[int]:
        """`+FLAGS`; a NO naming flags or keywords is taken apart: the system flags again
        without the keywords, then each keyword alone, and the keywords still refused are
        recorded, not retried. Any other NO fails the attempt (retried with back-off)."""
        system = [f for f in add if f.startswith("\\")]
        keywords = [f for f in add if not f.startswith("\\")]
        try:
            return self._store(imap, view, "+", add, current, outcome)
        except StoreRefused as refused:
            if not keywords or not refused.names_keywords:
                raise
            self.log.info(
                "%s: STORE refused (%s): storing the system flags, then each keyword alone",
                view.name,
                refused.reply.said,
            )
        written = self._store(imap, view, "+", system, current, outcome)
        for keyword in keywords:
            try:
                written |= self._store(imap, view, "+", [keyword], current, outcome)
            except StoreRefused as alone:
                if not alone.names_keywords:
                    raise
                self.log.warning(
                    "%s: the server refused the keyword %s (%s): kept in the database only",
                    view.name,
                    keyword,
                    alone.reply.said,
                )
                view.refuse(keyword)
                outcome.refused.append(
                    Refusal(view.name, keyword, KeywordRefusal.refused, alone.reply.said)
                )
        return written

    def _store(
        self,
        imap: ImapSession,
        view: FolderView,
        op: str,
        flags: Sequence[str],
        current: dict[int, MessageFlags],
        outcome: Outcome,
    ) -> set[int]:
        """`UID STORE <op>FLAGS.SILENT` on the messages that still need it; re-read and
        re-decide those changed concurrently. Updates `current`; returns the UIDs written."""
        if not flags:
            return set()
        written: set[int] = set()
        for _round in range(MAX_REDECIDE_ROUNDS):
            need = sorted(uid for uid, s in current.items() if _needs(op, flags, s.flags))
            if not need:
                return written
            modseqs = [current[uid].modseq for uid in need]
            unchanged_since = None
            if imap.condstore and all(m is not None for m in modseqs):
                # any change after the read has a higher MODSEQ than every one just read
                unchanged_since = max(m for m in modseqs if m is not None)
            reply = imap.store_flags(need, op, flags, unchanged_since=unchanged_since)
            outcome.stores += 1
            if not reply.ok:
                raise StoreRefused(view, reply)
            modified = set(reply.modified) & set(need)
            for uid in need:
                if uid not in modified:
                    written.add(uid)
                    current[uid] = MessageFlags(_applied(op, flags, current[uid].flags), None)
            if not modified:
                return written
            self.log.info(
                "%s: UID %s changed concurrently: reading again and deciding again",
                view.name,
                ",".join(map(str, sorted(modified))),
            )
            current.update(imap.fetch_flags(sorted(modified)))
        raise WriteBackError(
            f"{view.name}: messages kept changing concurrently ({MAX_REDECIDE_ROUNDS} rounds)"
        )


def keyword_refused(view: FolderView, keyword: str, limit: int | None) -> Refusal | None:
    """Why this keyword is not sent to the folder (None: it is). A folder's distinct keywords
    are counted from the FLAGS of its SELECT; where the probe knows a `keyword_limit`, a new
    keyword beyond it is not sent, nor one the folder lists beyond it (Dovecot on Maildir
    accepts a 27th keyword and loses it when its index is rebuilt)."""

    def refusal(reason: KeywordRefusal, detail: str) -> Refusal:
        return Refusal(view.name, keyword, reason, detail)

    if not is_atom(keyword):
        return refusal(KeywordRefusal.invalid, "not an IMAP atom")
    position = view.position(keyword)
    if position is not None:
        if limit is not None and position >= limit:
            return refusal(
                KeywordRefusal.limit,
                f"the folder's keyword number {position + 1}; the server keeps {limit}",
            )
        return None
    if not view.creates_keywords and keyword.lower() not in _lower(view.permanent):
        return refusal(KeywordRefusal.folder_full, "PERMANENTFLAGS has no \\* and not this keyword")
    if limit is not None and len(view.keywords) >= limit:
        return refusal(
            KeywordRefusal.limit,
            f"the folder has {len(view.keywords)} distinct keywords; the server keeps {limit}",
        )
    return None


def _needs(op: str, flags: Sequence[str], have: Sequence[str]) -> bool:
    present = _lower(have)
    if op == "+":
        return any(f.lower() not in present for f in flags)
    return any(f.lower() in present for f in flags)


def _applied(op: str, flags: Sequence[str], have: Sequence[str]) -> tuple[str, ...]:
    if op == "+":
        present = _lower(have)
        return tuple(have) + tuple(f for f in flags if f.lower() not in present)
    gone = {f.lower() for f in flags}
    return tuple(f for f in have if f.lower() not in gone)


def _flag_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise WriteBackError(f"flags must be a list, not {value!r}", permanent=True)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise WriteBackError(f"not a flag: {item!r}", permanent=True)
        if item.lower() not in {f.lower() for f in out}:
            out.append(item)
    return out


def _lower(flags: Iterable[str]) -> set[str]:
    return {f.lower() for f in flags}
