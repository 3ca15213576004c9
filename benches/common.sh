# shellcheck shell=bash
# Shared by the load benchmark's scripts (sourced, not run): messages, installing tools,
# the arithmetic of the result tables, the scratch directory, and starting Redis and
# the example server, logging in and counting instructions per request under callgrind
# (benches/load.sh and benches/instructions.sh). A script sets NAME before sourcing.

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$NAME" "$*" >&2; exit 1; }

# install COMMAND PACKAGE: installs the Debian package when the command is missing.
install() {
    command -v "$1" >/dev/null && return
    say "installing $2"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y "$2" >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y "$2" >/dev/null; }
    command -v "$1" >/dev/null || die "cannot install $2"
}

# mean NAME FIELD: the mean over the rounds in $WORK/runs of one column of NAME's lines
# (column 2, requests/s, as a whole number; the others with two decimals).
mean() { awk -v n="$1" -v f="$2" '$1 == n { s += $f; c++ } END { printf (f == 2 ? "%.0f" : "%.2f"), s / c }' "$WORK/runs"; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", x / y }'; }
# spread NAME BASE: "min / median / max" over the rounds of NAME's requests/s over BASE's
# in the same round (column 6 of $WORK/runs is the round).
spread() {
    awk -v n="$1" -v b="$2" '$1 == n { x[$6] = $2 } $1 == b { y[$6] = $2 }
        END { for (r in x) print x[r] / y[r] }' "$WORK/runs" | sort -g |
        awk '{ v[NR] = $1 } END { m = (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)
            printf "%.2f / %.2f / %.2f", v[1], m, v[NR] }'
}

# scratch: makes the scratch directory WORK and arranges that on exit every process in
# PIDS is stopped and WORK is removed.
scratch() {
    WORK=$(mktemp -d)
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# free_port: a free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis: a redis-server without persistence on a free loopback port, its files in
# WORK; sets REDIS_PORT, REDIS_URL and REDIS_PID (in PIDS). rcli is redis-cli on it.
start_redis() {
    REDIS_PORT=$(free_port)
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
    rcli ping >/dev/null || die "redis-server did not start"
}
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# wait_up BASE LOG WHAT [TRIES]: waits until BASE/healthz answers, TRIES times 0.1 s
# (100 unless given); if it never does, prints LOG and dies with "WHAT did not start".
wait_up() {
    local base=$1 log=$2 what=$3 tries=${4:-100}
    for _ in $(seq "$tries"); do curl -sf "$base/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "$base/healthz" >/dev/null || { cat "$log" >&2; die "$what did not start"; }
}

# sign_in BASE: logs the user "bench" in through the server's WeChat simulator
# (POST /sim/login, then POST /auth/authorize) and sets TOKEN to its access token.
sign_in() {
    local code
    code=$(curl -sf "$1/sim/login" -H 'content-type: application/json' -d '{"user": "bench"}')
    TOKEN=$(curl -sf "$1/auth/authorize" -H 'content-type: application/json' -d "$code" |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    [ -n "$TOKEN" ] || die "no token from /auth/authorize"
}

# The kinds of request that send knows: (a) GET /ping, no layer; (b) GET /me/ping with
# TOKEN; (c) with a malformed token; (d) with a well-formed but unknown token.
MALFORMED="demo.not-a-token"
UNKNOWN="demo.oBenchNobody.$(printf 'A%.0s' $(seq 43))"

# send BASE KIND COUNT: COUNT requests of one kind, one after another on one keep-alive
# connection; checks every status.
send() {
    local base=$1 kind=$2 count=$3 path=/me/ping token="" want=200 args=()
    case $kind in
        a) path=/ping ;;
        b) token=$TOKEN ;;
        c) token=$MALFORMED want=401 ;;
        d) token=$UNKNOWN want=401 ;;
        *) die "send: unknown kind $kind" ;;
    esac
    [ -n "$token" ] && args=(-H "Authorization: Bearer $token")
    for _ in $(seq "$count"); do args+=(-o /dev/null "$base$path"); done
    local got
    got=$(curl -s -w '%{http_code}\n' "${args[@]}" | sort | uniq -c | awk '{print $2 "x" $1}' | paste -sd' ')
    [ "$got" = "${want}x$count" ] || die "($kind): expected $count answers $want, got $got"
}

# callgrind_server LABEL [NAME=VALUE...] KIND...: a fresh example server under callgrind
# on REDIS_URL, with the environment NAME=VALUE added (for example
# MPAUTHX_VALIDATION_CACHE_MS=1000, MPAUTHX_METRICS=off); after a warm-up of 200
# requests of each kind, PROFILE_REQUESTS requests of each kind, the counters zeroed
# before the first and dumped after each, into PROFILE_DIR/LABEL.PID.N (N = 1, 2, … in
# the order of the kinds; earlier dumps of LABEL are removed first). Appends "LABEL KIND
# instructions-per-request dump" to $WORK/profile.
callgrind_server() {
    local label=$1 vars=() port pid kind n=0
    shift
    while [ $# -gt 0 ] && [[ $1 == *=* ]]; do vars+=("$1"); shift; done
    mkdir -p "$PROFILE_DIR"
    rm -f "$PROFILE_DIR/$label".*
    port=$(free_port)
    env MPAUTHX_LISTEN="127.0.0.1:$port" MPAUTHX_REDIS_URL="$REDIS_URL" MPAUTHX_DATABASE="$WORK/users-$label.db" \
        RUST_LOG=warn "${vars[@]}" \
        valgrind --tool=callgrind --callgrind-out-file="$PROFILE_DIR/$label.%p" \
        target/release/examples/server 2>"$WORK/callgrind-$label.log" &
    pid=$!
    PIDS+=("$pid")
    wait_up "http://127.0.0.1:$port" "$WORK/callgrind-$label.log" "the server under callgrind" 600
    for kind in "$@"; do send "http://127.0.0.1:$port" "$kind" 200; done
    callgrind_control --zero "$pid" >/dev/null
    for kind in "$@"; do
        send "http://127.0.0.1:$port" "$kind" "$PROFILE_REQUESTS"
        callgrind_control --dump="$kind" "$pid" >/dev/null
        n=$((n + 1))
        local dump="$PROFILE_DIR/$label.$pid.$n"
        for _ in $(seq 100); do [ -s "$dump" ] && grep -q '^totals:' "$dump" && break; sleep 0.1; done
        awk -v l="$label" -v k="$kind" -v c="$PROFILE_REQUESTS" -v d="$dump" \
            '/^totals:/ { printf "%s %s %.0f %s\n", l, k, $2 / c, d }' "$dump" >>"$WORK/profile"
        tail -1 "$WORK/profile" | cut -d" " -f1-3 >&2
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
