#!/usr/bin/env bash
# Regenerates the initial migration from the models (only while nothing has been released).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f alembic/versions/0001_*.py
IMAPDESK_DATABASE_URL="sqlite:///$tmp/gen.db" .venv/bin/alembic revision --autogenerate \
  --rev-id 0001 -m "initial schema" >/dev/null
IMAPDESK_DATABASE_URL="sqlite:///$tmp/gen.db" .venv/bin/alembic upgrade head
IMAPDESK_DATABASE_URL="sqlite:///$tmp/gen.db" .venv/bin/alembic check
.venv/bin/ruff format alembic/versions >/dev/null 2>&1 || true
rm -rf "$tmp"
echo "alembic/versions regenerated"
