"""The webhook sender: takes the event log into deliveries and sends the due ones.

One thread per worker process (started by `Worker.run`). Each turn, in one transaction, the
events waiting become one `WebhookDelivery` per subscription that wants them, with the
events' receipts (imapdesk/domain/webhooks/deliveries.py): an event is taken once, however
often the worker dies. Then each due delivery is claimed (a conditional UPDATE, committed),
its target checked again (every address of the host; private ones refused unless allowed),
POSTed with the Standard Webhooks headers to the address checked, and the outcome recorded:
delivered on a 2xx, else retried with back-off for the retry window. A worker killed during
an attempt leaves a claim that the next one takes over (its process gone, or the lease run
out): the delivery is sent again under the same `webhook-id`, so nothing is lost and a
receiver can tell a repeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from imapdesk.domain import events
from imapdesk.domain.webhooks import deliveries, signing, targets
from imapdesk.domain.webhooks.subscriptions import signing_secrets
from imapdesk.kernel.db import unit_of_work
from imapdesk.kernel.errors import ImapdeskError
from imapdesk.kernel.models import WebhookDelivery, WebhookSubscription
from imapdesk.kernel.settings import Settings

log = logging.getLogger(__name__)

# deliveries sent at once (a slow receiver holds up one of them, not all)
SENDERS = 4
# how often the consumer's floor is moved on (its receipts dropped)
FLOOR_EVERY_SECONDS = 60.0
# the most of a receiver's answer read
READ_AT_MOST = 64 * 1024
USER_AGENT = "imapdesk-webhooks"


def owner_alive(claimed_by: str | None, me: str) -> bool:
    """Whether the sender that holds a claim may still be at work."""
    if not claimed_by or claimed_by == me:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: only the lease tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def attempt(
    client: httpx.Client,
    settings: Settings,
    delivery: WebhookDelivery,
    secrets_: list[str],
    url: str,
) -> deliveries.Outcome:
    """One POST of a delivery; never raises for the network or the receiver."""
    began = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - began) * 1000)

    try:
        target = targets.resolve(url, allow_private=settings.webhook_allow_private)
    except ImapdeskError as exc:
        return deliveries.Outcome(None, duration_ms=took(), error=f"refused: {exc.message}")
    body = delivery.body.encode()
    headers = signing.headers(secrets_, delivery.msg_id, int(time.time()), body)
    default_port = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    headers["host"] = host if target.port == default_port else f"{host}:{target.port}"
    headers["user-agent"] = USER_AGENT
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    last_error = "no address"
    for address in target.addresses:
        try:
            with client.stream(
                "POST",
                target.url_for(address),
                content=body,
                headers=headers,
                extensions=extensions,
            ) as response:
                answer = b""
                for chunk in response.iter_bytes():
                    answer += chunk
                    if len(answer) >= READ_AT_MOST:
                        break
                text = answer[: deliveries.RESPONSE_EXCERPT].decode("utf-8", "replace")
                return deliveries.Outcome(response.status_code, text, took())
        except httpx.HTTPError as exc:
            last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            continue
    return deliveries.Outcome(None, duration_ms=took(), error=last_error)


class WebhookSender:
    """Runs until `stop` is set."""

    def __init__(self, engine: Engine, settings: Settings, stop: threading.Event) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = stop
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds * 2 + 30)
        self._floor_at = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with unit_of_work(self.engine) as db:
                    events.pending_events(db, deliveries.CONSUMER, limit=1)  # its place, once
                break
            except Exception:
                log.exception("webhooks: cannot reach the database; trying again")
                self.stop.wait(1.0)
        timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook") as pool,
        ):
            while not self.stop.is_set():
                try:
                    busy = self.turn(client, pool)
                except Exception:  # a bug or the database away must not end the worker
                    log.exception("webhooks: a turn failed; trying again")
                    busy = False
                    self.stop.wait(1.0)
                if not busy:
                    self.stop.wait(self.settings.webhook_poll_seconds)

    def turn(self, client: httpx.Client, pool: ThreadPoolExecutor) -> bool:
        """Take the events waiting, send what is due; True when something was done."""
        taken = made = 0
        # a look first, that writes nothing: the write (a lock on SQLite) only when needed
        with Session(self.engine) as db:
            waiting = bool(events.pending_events(db, deliveries.CONSUMER, limit=1))
        if waiting:
            with unit_of_work(self.engine) as db:
                taken, made = deliveries.fan_out(db)
        if made:
            log.info("webhooks: %d event(s) into %d delivery(ies)", taken, made)
        if time.monotonic() - self._floor_at > FLOOR_EVERY_SECONDS:
            with unit_of_work(self.engine) as db:
                events.advance_floor(db, deliveries.CONSUMER)
                deliveries.prune(db)
            self._floor_at = time.monotonic()
        with Session(self.engine) as db:
            due = deliveries.due(db, limit=SENDERS * 8)
        claimed: list[int] = []
        for item in due:
            held = item.claimed_by is not None and item.claimed_until is not None
            taking_over = None
            if held and item.claimed_by != self.me:
                if owner_alive(item.claimed_by, self.me):
                    continue  # maybe still at it: its lease decides
                taking_over = item.claimed_by
            with unit_of_work(self.engine) as db:
                if deliveries.claim(db, item.id, self.me, self.lease, taking_over=taking_over):
                    claimed.append(item.id)
        if claimed:
            list(pool.map(lambda d: self._send(client, d), claimed))
        return bool(taken or claimed)

    def _send(self, client: httpx.Client, delivery_id: int) -> None:
        try:
            with Session(self.engine) as db:
                delivery = db.get(WebhookDelivery, delivery_id)
                if delivery is None:
                    return
                subscription = db.get(WebhookSubscription, delivery.subscription_id)
                if subscription is None:
                    return
                secrets_ = signing_secrets(subscription, self.settings)
                url = subscription.url
            outcome = attempt(client, self.settings, delivery, secrets_, url)
            with unit_of_work(self.engine) as db:
                deliveries.record(db, self.settings, delivery_id, self.me, outcome)
            if not outcome.ok:
                # the subscription's id, not its URL (which may carry a token)
                log.info(
                    "webhooks: delivery %d of webhook %s failed: %s",
                    delivery_id,
                    subscription.id,
                    outcome.error or outcome.status,
                )
        except Exception:
            log.exception("webhooks: delivery %d could not be sent", delivery_id)
