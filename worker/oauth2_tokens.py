"""Keeping OAuth2 mailboxes' access tokens fresh, in a thread of the worker.

A connection that stays logged in needs no new token, but the next one must not wait for the
provider, and some providers end sessions when their token expires: each access token is
refreshed a while before it expires (imapdesk.domain.mailboxes.oauth2.refresh_due), one
mailbox after another, a failure touching only its own mailbox.
"""

from __future__ import annotations

import logging

from imapdesk.domain.mailboxes.oauth2 import refresh_due
from imapdesk.worker.folder_sync import SyncContext

log = logging.getLogger(__name__)


class TokenRefresher:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx

    def run(self) -> None:
        """Until ctx.stop is set: look for due tokens as often as for new mailboxes."""
        while not self.ctx.stop.is_set():
            try:
                refresh_due(self.ctx.engine, self.ctx.settings)
            except Exception:  # the database away: the next turn tries again
                log.exception("cannot look for OAuth2 tokens to refresh")
            self.ctx.stop.wait(self.ctx.settings.mailbox_refresh_seconds)
