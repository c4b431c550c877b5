"""Outgoing webhooks: subscriptions (an admin's URL and events, a secret per subscription),
the public event names, Standard Webhooks signing, which targets may be called, and the
deliveries' bookkeeping (one row per subscription and event; retries, replay, disabling).
The worker sends them (worker/webhooks.py); the REST API and the admin page manage them."""
