"""Agents' notifications: what each is told in the app (the bell, the list, the browser's
notifications while a tab is open) and by email if they chose so. `inbox` keeps them (create,
list, read, preferences); `from_events` turns the event log into them (assigned to me, a
customer replied on mine, mentioned in a note, SLA warning, a rule's notice), run by the
worker (worker/notifications.py); `mentions` finds `@handle`s in a note."""
