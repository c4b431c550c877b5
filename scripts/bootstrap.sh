#!/usr/bin/env bash
# Prepares a Debian 12 machine and this checkout for development and tests. Idempotent, and
# quick (well under 2 s) when everything is already in place.
#
#   scripts/bootstrap.sh [--with-browser] [--with-postgres] [--with-other-imap]
#
# - Debian packages: dovecot-imapd dovecot-lmtpd isync (always), chromium (--with-browser),
#   postgresql (--with-postgres); `apt-get update` only when something is missing.
# - The system Dovecot the package would start is stopped and disabled: imapdesk runs its own
#   instances (imapdesk/devtools/mailserver.py) with their own configuration, which are left alone.
# - .venv with Python >= 3.11 and `pip install -e '.[dev]'`, redone when pyproject.toml changes.
# - --with-other-imap: Cyrus IMAP and Courier-IMAP for the tests, unpacked from their .deb files
#   into .run/other-imap/ (never installed: they would remove Dovecot's IMAP), and the libraries
#   they link installed with apt, after checking that installing them removes nothing.
set -euo pipefail

cd "$(dirname "$0")/.."

with_browser=0
with_postgres=0
with_other_imap=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=1 ;;
    --with-postgres) with_postgres=1 ;;
    --with-other-imap) with_other_imap=1 ;;
    -h | --help)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bootstrap: unknown option $arg" >&2
      exit 2
      ;;
  esac
done

log() { echo "bootstrap: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    SUDO=(false)
  fi
fi

as_root() {
  if [ "${SUDO[0]:-}" = false ]; then
    log "need root for: $* (run as root or install sudo)"
    return 1
  fi
  "${SUDO[@]}" "$@"
}

# --- Debian packages --------------------------------------------------------------------------

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

wanted=(dovecot-imapd dovecot-lmtpd isync)
[ "$with_browser" = 1 ] && wanted+=(chromium)
[ "$with_postgres" = 1 ] && wanted+=(postgresql)

python_ok() {
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}
if [ ! -x .venv/bin/python ]; then
  # Debian's python3 lacks venv/ensurepip until python3-venv is installed.
  if ! python_ok || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    wanted+=(python3 python3-venv)
  fi
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
else
  log "not a Debian system: install ${wanted[*]} yourself"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  # Keep package scripts from starting services (the system Dovecot in particular).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created_policy=1
  fi
  cleanup_policy() { [ "$created_policy" = 1 ] && as_root rm -f "$policy" || true; }
  trap cleanup_policy EXIT
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" \
    >/dev/null
  cleanup_policy
  trap - EXIT
fi

# --- Cyrus and Courier for the tests (--with-other-imap) --------------------------------------

# The libraries the unpacked Cyrus and Courier programs link that a Debian 12 system may lack
# (tests/support/other_servers.py RUNTIME_LIBRARIES names the same).
other_imap_libs=(libcourier-unicode4 libgamin0 libical3 libidn12 libltdl7 libpcre3 libxapian30
  libsasl2-modules libsasl2-modules-db)
apt_lists_present() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
if [ "$with_other_imap" = 1 ] && command -v dpkg-query >/dev/null 2>&1; then
  libs_missing=()
  for pkg in "${other_imap_libs[@]}"; do
    installed "$pkg" || libs_missing+=("$pkg")
  done
  if [ "${#libs_missing[@]}" -gt 0 ]; then
    apt_lists_present || as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    plan=$(apt-get install --simulate --no-install-recommends "${libs_missing[@]}" 2>&1) || {
      echo "$plan" >&2
      exit 1
    }
    if grep -q '^Remv' <<<"$plan"; then
      log "installing ${libs_missing[*]} would remove packages; refusing:"
      grep '^Remv' <<<"$plan" >&2
      exit 1
    fi
    log "installing ${libs_missing[*]} (for the unpacked Cyrus and Courier)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${libs_missing[@]}" >/dev/null
  fi
fi

# --- no system Dovecot ------------------------------------------------------------------------

# A dovecot master started without -c, or with -c /etc/dovecot/..., is the system instance.
system_dovecot_pids() {
  local pid args
  for pid in $(pgrep -x dovecot 2>/dev/null || true); do
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    case "$args" in
      *" -c /etc/dovecot/"* | *"--config /etc/dovecot/"*) echo "$pid" ;;
      *" -c "* | *"--config "*) ;;
      *) echo "$pid" ;;
    esac
  done
}

systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

if systemd_running && installed dovecot-core; then
  for unit in dovecot.socket dovecot.service; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
      log "disabling the system $unit"
      as_root systemctl disable --now --quiet "$unit" || true
    fi
  done
fi
pids=$(system_dovecot_pids)
if [ -n "$pids" ]; then
  log "stopping the system Dovecot (pid $pids)"
  if systemd_running; then
    as_root systemctl stop dovecot.socket dovecot.service 2>/dev/null || true
  elif command -v service >/dev/null 2>&1 && [ -x /etc/init.d/dovecot ]; then
    as_root service dovecot stop >/dev/null 2>&1 || true
  fi
  if [ -n "$(system_dovecot_pids)" ]; then
    as_root doveadm -c /etc/dovecot/dovecot.conf stop >/dev/null 2>&1 || true
  fi
  if [ -x /usr/sbin/update-rc.d ] && [ -e /etc/init.d/dovecot ] && ! systemd_running; then
    as_root update-rc.d dovecot disable >/dev/null 2>&1 || true
  fi
fi

# --- Python environment -----------------------------------------------------------------------

if [ ! -x .venv/bin/python ]; then
  if ! python_ok; then
    log "Python >= 3.11 is required (python3 is $(python3 --version 2>&1 || echo missing))"
    exit 1
  fi
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  log ".venv has Python $(.venv/bin/python -V 2>&1); 3.11+ is required: remove .venv and rerun"
  exit 1
fi

stamp=.venv/.imapdesk-bootstrap-stamp
want_stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want_stamp" ]; then
  log "pip install -e '.[dev]'"
  pip_log=$(mktemp)
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' \
    >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    rm -f "$pip_log"
    exit 1
  fi
  rm -f "$pip_log"
  echo "$want_stamp" >"$stamp"
fi

if [ "$with_other_imap" = 1 ] &&
  ! { [ -f .run/other-imap/cyrus.json ] && [ -f .run/other-imap/courier.json ]; }; then
  apt_lists_present || as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  log "fetching Cyrus and Courier into .run/other-imap"
  .venv/bin/python -m tests.support.other_servers fetch >&2
fi
