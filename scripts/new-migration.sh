#!/usr/bin/env bash
# Autogenerates the next migration from the models: scripts/new-migration.sh "what changed"
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 \"what changed\"" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export IMAPDESK_DATABASE_URL="sqlite:///$tmp/gen.db"
.venv/bin/alembic upgrade head
last=$(ls alembic/versions | grep -Eo '^[0-9]{4}' | sort | tail -1)
next=$(printf '%04d' $((10#$last + 1)))
.venv/bin/alembic revision --autogenerate --rev-id "$next" -m "$1" >/dev/null
.venv/bin/alembic upgrade head
.venv/bin/alembic check
.venv/bin/ruff format alembic/versions >/dev/null
echo "alembic/versions/${next}_*.py written; check it on PostgreSQL too"
