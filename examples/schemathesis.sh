#!/usr/bin/env bash
# Runs schemathesis (from PyPI: `pip install schemathesis`) against the example server on
# its embedded defaults: every operation of examples/openapi.json, with generated valid
# and invalid input, every check on (no 5xx, every answer matching the document), as an
# anonymous client and with a real token. Exits non-zero on any failure.
#
# Knobs (environment): EXAMPLES (per operation, default 50), PORT (default: a free one).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v schemathesis >/dev/null || { echo "schemathesis is missing: pip install schemathesis" >&2; exit 2; }
EXAMPLES=${EXAMPLES:-50}
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE="http://127.0.0.1:$PORT"
work=$(mktemp -d)
cargo build --quiet --example server
(cd "$work" && MPAUTHX_LISTEN="127.0.0.1:$PORT" exec "$OLDPWD/target/debug/examples/server" >"$work/server.log" 2>&1) &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done

# A real token, so that the protected operations are tested past the layer too.
login=$(curl -sf "$BASE/sim/login" -H 'content-type: application/json' -d '{"user": "schemathesis"}')
token=$(curl -sf "$BASE/auth/authorize" -H 'content-type: application/json' -d "$login" \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "no token from the example server" >&2; exit 1; }

schemathesis run "$BASE/openapi.json" --checks all --max-examples "$EXAMPLES" \
  -H "Authorization: Bearer $token"
