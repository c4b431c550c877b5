"""imapdesk: a team helpdesk that lives on shared IMAP mailboxes (docs/ARCHITECTURE.md)."""
