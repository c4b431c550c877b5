"""The IMAP session layer, one for read-sync, write-back and the probe.

- `session`: `ImapSession`, one logged-in connection: folders, reading (fast FETCH, flags,
  SEARCH, the news a server tells along the way) and writing (flag stores, MOVE, COPY,
  UID EXPUNGE). `ImapSession.command` is the one way to send a raw command and read its
  untagged responses.
- `protocol`: what goes over the wire, without a connection: sequence sets, quoted folder
  names, parsing FETCH items, SEARCH hits, COPYUID and MODIFIED.
- `probe`: what a server can do, asked once at connect (the worker stores it, the admin's
  connection test shows it).
- `folders`: the personal namespace, and which folder plays which role of the mapping (the
  admin's setting, special-use, usual names, the default under the namespace's prefix).

Knows nothing of the database: the worker decides, this layer speaks.
"""

from imapdesk.mail.imap.protocol import FetchedMessage, ImapReply, MessageFlags
from imapdesk.mail.imap.session import FolderStatus, ImapAccount, ImapSession

__all__ = [
    "FetchedMessage",
    "FolderStatus",
    "ImapAccount",
    "ImapReply",
    "ImapSession",
    "MessageFlags",
]
