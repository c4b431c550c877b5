"""Demo and developer tooling, the `[demo]` extra (pip install 'imapdesk[demo]'): a private
Dovecot on loopback (`mailserver`), an SMTP relay into it (`smtp_relay`), generated demo mail
(`demo_data`) and what `imapdesk demo` sets up with them (`demo`). It may import the domain and
below, never the API, the worker or the command line; `extra` says what of it is missing."""
