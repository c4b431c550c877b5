#!/usr/bin/env bash
# Puts Swagger UI, which /docs serves from imapdesk itself (no CDN: a machine without internet
# still gets the page), into frontend/static/vendor/swagger-ui/. The files come from the npm
# package swagger-ui-dist (the Swagger UI project's own build), fetched by `npm pack` at the
# version below and checked against its pinned integrity before anything is copied.
#
#   scripts/vendor-swagger-ui.sh           after changing VERSION and INTEGRITY
#
# A new version: VERSION, and INTEGRITY from `npm view swagger-ui-dist@VERSION dist.integrity`.
set -euo pipefail

VERSION=5.36.0
INTEGRITY=sha512-Lt6/Kb0gXmLdiabLhvso4VdJP9V7qJWB0zh0gzeXUV3+CMOTzMmvpJRSXN7EAjfwixwmoi9ezDbLHiexC7lA9A==
FILES=(swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png
       LICENSE NOTICE)

cd "$(dirname "$0")/.."
target=frontend/static/vendor/swagger-ui
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null)
tarball="$work/swagger-ui-dist-$VERSION.tgz"
actual=$(python3 - "$tarball" <<'PY'
import base64, hashlib, sys
with open(sys.argv[1], "rb") as f:
    print("sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode())
PY
)
if [ "$actual" != "$INTEGRITY" ]; then
  echo "vendor-swagger-ui.sh: swagger-ui-dist $VERSION is $actual, not $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
rm -rf "$target"
mkdir -p "$target"
for name in "${FILES[@]}"; do
  cp "$work/package/$name" "$target/$name"
done
echo "swagger-ui-dist $VERSION ($INTEGRITY)" > "$target/VERSION"
echo "vendor-swagger-ui.sh: swagger-ui-dist $VERSION in $target"
