"""Write-back: drains one mailbox's outbox (`PendingImapAction` rows) to its IMAP server.

One `WriteBack` per mailbox (`loop`), on its own connection, with read-write SELECTs. It is
woken at once when a transaction in this process commits work for its mailbox
(`imapdesk.kernel.wakeups`), polls the outbox every `writeback_poll_seconds` for what other
processes committed, and applies the due actions in id order. The IMAP commands are the
session layer's (`imapdesk.mail.imap`); this package decides what to send.

Decisions (and the module that keeps each):
- **Order and blocking** (`ordering`): actions run strictly in id order; an action that fails
  (and waits for its retry) blocks the later actions of the same conversation (or message), not
  those of other conversations, so one broken conversation never holds up the whole mailbox.
  An action that ends `failed` no longer blocks: it stays visible (state, `last_error`, an
  Activity) and the database keeps the state.
- **One change, one write** (`flags`): for `flags`, the folder's messages are read first (`UID
  FETCH FLAGS MODSEQ`), only those that still need the change are written, in one `UID STORE`
  per folder and direction, and a replayed action that already reached the server writes
  nothing. With CONDSTORE the STORE carries `UNCHANGEDSINCE` (the highest MODSEQ just read: any
  later change has a higher one). Messages reported `MODIFIED` were changed by someone else
  meanwhile: they are read again, stored on their locations and re-decided (written again only
  where still needed), never blindly retried. A change made between the database's view and
  the first read is seen by comparing MODSEQs, and taken in the same way.
- **Keywords** (`flags`) are sent only where the mailbox keeps them (`\\*` in PERMANENTFLAGS,
  or keywords listed there). A refusal is a decision, not a retry: a keyword is not sent to a
  folder that refused it before, that takes no new keywords, or that is at the server's known
  `keyword_limit` (Dovecot on Maildir 26, Cyrus 100; counted from the FLAGS of its SELECT). A
  STORE answered with NO naming flags or keywords is sent again without them, then each keyword
  alone: the claim reaches the mailbox at once, the refused keywords do not. After a STORE the
  flags are read back and every added keyword verified. Whatever was not kept is recorded per
  folder (`UnkeptKeyword`, `recording`), never sent there again, and the action is done, so it
  holds back nothing of its conversation; the state stays in the database and the
  conversation's tag is marked "not kept in the mailbox".
- **Moves** (`moves`) take the conversation's messages out of the conversation folders (roles
  inbox, pending, archive, junk, trash, and watched folders) into the folder of the target role
  (special-use wins, else by name, created and subscribed when missing). Sent and Notes are
  never moved: our replies stay in Sent, where Thunderbird users expect them. `UID MOVE` where
  the server has MOVE, else `UID COPY` + `UID STORE +FLAGS.SILENT (\\Deleted)` + `UID EXPUNGE`
  of exactly those UIDs (UIDPLUS); without either the action fails at once rather than risk a
  bare EXPUNGE of other people's mail. New UIDs come from COPYUID.
- **Crash safety** (`recording`, `moves`): the IMAP work and the recording of its result are
  two steps; the action is marked done in the same transaction that records the new locations,
  flags and MODSEQs. A crash between them replays the action: UIDs no longer in the source
  folder are skipped and the messages are found in the target by Message-ID; a flags action
  finds nothing left to write. Messages without a Message-ID cannot be found that way.
- **Messages not where the database has them** (`flags`, `moves`; moved or expunged by someone
  else before the read side noticed): the action is applied to the others and retried later,
  when the read side has found them or seen them go; if it never does, the action ends
  `failed`.
- **Failures** (`failures`, `loop`): a lost connection is not the action's fault: reconnect
  with back-off, the action stays as it is. Any other failure counts an attempt, records
  `last_error` and retries with exponential back-off; after `writeback_max_attempts` (or at
  once when retrying cannot help) the action is `failed`.
"""

from imapdesk.worker.writeback.failures import WriteBackError
from imapdesk.worker.writeback.loop import WriteBack

__all__ = ["WriteBack", "WriteBackError"]
