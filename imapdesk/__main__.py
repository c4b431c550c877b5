"""`python -m imapdesk`: the `imapdesk` command."""

from imapdesk.cli.app import main

main()
