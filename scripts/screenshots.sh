#!/usr/bin/env bash
# Screenshots of the main pages (queue, conversation, composer, admin, a phone) with the demo's
# mail, written to docs/screenshots/*.png. Needs Dovecot and Debian's Chromium
# (scripts/bootstrap.sh installs both); never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/bootstrap.sh
exec .venv/bin/python scripts/screenshots.py "$@"
