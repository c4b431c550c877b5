#!/usr/bin/env bash
# The whole check, as CI runs it: bootstrap, a PostgreSQL for the tests, ruff, mypy, the
# dependency contracts (lint-imports), pytest (the slow packaging test included).
#
#   scripts/test.sh [PYTEST ARGS...]      e.g. scripts/test.sh tests/core -k mailserver
#   IMAPDESK_TEST_WORKERS=N               pytest workers (pytest-xdist; default 3, 0: none)
#
# PostgreSQL: IMAPDESK_TEST_PG_URL when set; else the server on 127.0.0.1:5432 when it lets
# user postgres in without a password; else the Debian cluster is started, and when that does
# not trust 127.0.0.1 either, a throwaway cluster (trust auth, removed on exit) is used;
# IMAPDESK_TEST_PG=throwaway goes straight to the throwaway cluster.
# Exit code: pytest's when it failed (5, no tests collected, counts as a failure), else 1 when
# ruff, mypy or lint-imports failed, else 0.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { echo "test.sh: $*" >&2; }

scripts/bootstrap.sh --with-browser --with-postgres --with-other-imap

PY=.venv/bin/python

pg_trusts() { # PORT: user postgres gets in over TCP without a password
  "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys

import psycopg

psycopg.connect(
    host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
    connect_timeout=3, password="",
).close()
EOF
}

pg_answers() { # PORT: something speaks PostgreSQL there
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p "$1" -t 3
  else
    "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 3)" \
      "$1" 2>/dev/null
  fi
}

wait_for_pg() { # PORT
  local i
  for i in $(seq 1 50); do
    pg_answers "$1" && return 0
    sleep 0.2
  done
  return 1
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

throwaway_dir=""
throwaway_bin=""
stop_throwaway() {
  if [ -n "$throwaway_dir" ]; then
    as_postgres "$throwaway_bin/pg_ctl" -D "$throwaway_dir/data" -m immediate stop \
      >/dev/null 2>&1 || true
    rm -rf "$throwaway_dir"
  fi
}

start_throwaway_cluster() {
  local bin port
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    log "no PostgreSQL server binaries (apt-get install postgresql)"
    return 1
  fi
  port=5432
  if pg_answers "$port"; then
    port=$("$PY" -c 'from imapdesk.devtools.mailserver import free_port; print(free_port())')
  fi
  throwaway_dir=$(mktemp -d /tmp/imapdesk-pg-XXXXXX)
  throwaway_bin=$bin
  trap stop_throwaway EXIT
  chmod 755 "$throwaway_dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$throwaway_dir"
  log "starting a throwaway PostgreSQL on 127.0.0.1:$port in $throwaway_dir"
  as_postgres "$bin/initdb" -D "$throwaway_dir/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$throwaway_dir/initdb.log" 2>&1 ||
    { cat "$throwaway_dir/initdb.log" >&2; return 1; }
  as_postgres "$bin/pg_ctl" -D "$throwaway_dir/data" -l "$throwaway_dir/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $throwaway_dir -c fsync=off -c synchronous_commit=off \
-c full_page_writes=off -c max_connections=200" start >/dev/null ||
    { cat "$throwaway_dir/server.log" >&2; return 1; }
  PG_PORT=$port
}

if [ -z "${IMAPDESK_TEST_PG_URL:-}" ] && [ "${IMAPDESK_TEST_PG:-}" = throwaway ]; then
  start_throwaway_cluster
  export IMAPDESK_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
elif [ -z "${IMAPDESK_TEST_PG_URL:-}" ]; then
  PG_PORT=5432
  if ! pg_trusts "$PG_PORT"; then
    if ! pg_answers "$PG_PORT" && [ "$(id -u)" -eq 0 ] && command -v pg_ctlcluster >/dev/null; then
      for conf in /etc/postgresql/*/main; do
        [ -d "$conf" ] || continue
        version=$(basename "$(dirname "$conf")")
        log "starting the Debian PostgreSQL $version cluster"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
        wait_for_pg "$PG_PORT" || true
        break
      done
    fi
    if ! pg_trusts "$PG_PORT"; then
      start_throwaway_cluster
    fi
  fi
  export IMAPDESK_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
fi
log "PostgreSQL for tests: $IMAPDESK_TEST_PG_URL"

lint_failed=0
log "ruff check ."
.venv/bin/ruff check . || lint_failed=1
log "mypy -p imapdesk"
.venv/bin/mypy -p imapdesk || lint_failed=1
log "lint-imports"
.venv/bin/lint-imports --no-cache || lint_failed=1

# Most tests wait on the mail server (its IDLE news comes 500 ms after a change), so more
# pytest workers than cores pay off; IMAPDESK_TEST_WORKERS=0 runs them in this process.
workers=${IMAPDESK_TEST_WORKERS:-3}
log "pytest -n $workers $*"
rc=0
.venv/bin/pytest -q -p no:cacheprovider -n "$workers" "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  log "pytest collected no tests: failing"
fi
if [ "$rc" -ne 0 ]; then
  log "FAILED (pytest exit $rc)"
  exit "$rc"
fi
if [ "$lint_failed" -ne 0 ]; then
  log "FAILED (ruff, mypy or lint-imports)"
  exit 1
fi
log "OK"
