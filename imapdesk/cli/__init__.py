"""The `imapdesk` command line (`app`), outside the domain: it may import the API, the worker,
the dev tooling and everything below them; nothing imports it."""
