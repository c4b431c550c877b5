#!/usr/bin/env bash
# From a fresh clone: installs what is missing (Debian packages, .venv), then runs the whole
# system: a local Dovecot with demo mail, SQLite, the worker and the web UI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/imapdesk demo "$@"
