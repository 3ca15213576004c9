#!/usr/bin/env bash
# The load benchmark's cluster mode: `MODE=cluster bash benches/load.sh` (or this script
# directly; see BENCHMARKS.md).
#
# Starts, on free loopback ports, one standalone redis-server and a Redis Cluster of
# three primaries (no replicas: they would only add replication work on writes), and two
# example servers in release mode, one on each. Logs USERS users in on each server
# (through its built-in WeChat simulator), then measures side by side in each round, at
# CONNECTIONS connections with wrk, each request carrying the next of the USERS tokens
# (so that the cluster's requests spread over its primaries):
#   (a)  GET /ping, no layer, on the standalone server
#   (b1) GET /me/ping behind MpAuthLayer, tokens in the standalone Redis
#   (b3) the same on the cluster
# Prints a markdown table. Exits non-zero only when the setup fails; everything it starts
# is stopped on exit.
#
# Knobs (environment): DURATION (s per wrk run, default 10), WARMUP (s, 2), ROUNDS (3),
# CONNECTIONS (64), USERS (256).
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
USERS=${USERS:-256}

cd "$(dirname "$0")/.."
NAME=cluster.sh
source benches/common.sh

install wrk wrk
install redis-server redis-server
install redis-cli redis-tools
install curl curl

# A free port whose cluster bus port (port + 10000) is free too.
free_port() {
    python3 -c '
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p + 10000 > 65535: continue
    try:
        b = socket.socket(); b.bind(("127.0.0.1", p + 10000)); b.close(); print(p); break
    except OSError: pass'
}

# A scratch directory; every process added to PIDS is stopped on exit.
scratch

say "building the example server (release)"
cargo build --release --example server >&2

# redis PORT [ARGS...]: a redis-server without persistence, in the background.
redis() {
    local port=$1
    shift
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$port.log" "$@" &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
    die "redis-server on $port did not start"
}

say "starting a standalone Redis and a three-primary cluster"
ONE=$(free_port)
redis "$ONE"
NODES=()
for i in 1 2 3; do
    port=$(free_port)
    redis "$port" --cluster-enabled yes --cluster-config-file "$WORK/nodes-$port.conf" \
        --cluster-node-timeout 1000
    NODES+=("$port")
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${NODES[@]}") --cluster-yes >/dev/null
for _ in $(seq 100); do
    redis-cli -p "${NODES[0]}" cluster info | grep -q cluster_state:ok && break
    sleep 0.1
done
redis-cli -p "${NODES[0]}" cluster info | grep -q cluster_state:ok || die "the cluster is not ok"
CLUSTER_URL="redis+cluster://$(printf '127.0.0.1:%s,' "${NODES[@]}" | sed 's/,$//')"

# server NAME REDIS_URL: an example server on that store; sets NAME_BASE and NAME_PID.
server() {
    local name=$1 url=$2 port
    port=$(free_port)
    MPAUTHX_LISTEN="127.0.0.1:$port" MPAUTHX_REDIS_URL="$url" MPAUTHX_DATABASE="$WORK/$name.db" \
        RUST_LOG=warn target/release/examples/server 2>"$WORK/$name.log" &
    PIDS+=($!)
    printf -v "${name}_PID" '%s' "$!"
    printf -v "${name}_BASE" '%s' "http://127.0.0.1:$port"
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
    cat "$WORK/$name.log" >&2
    die "the $name server did not start"
}
server single "redis://127.0.0.1:$ONE/"
server cluster "$CLUSTER_URL"

# tokens NAME BASE: logs USERS users in; one token per line in $WORK/NAME.tokens.
tokens() {
    local name=$1 base=$2 login token
    : >"$WORK/$name.tokens"
    for i in $(seq "$USERS"); do
        login=$(curl -sf "$base/sim/login" -H 'content-type: application/json' -d "{\"user\": \"bench-$i\"}")
        token=$(curl -sf "$base/auth/authorize" -H 'content-type: application/json' -d "$login" |
            sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
        [ -n "$token" ] || die "no token from $base/auth/authorize"
        echo "$token" >>"$WORK/$name.tokens"
    done
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/me/ping" -H "Authorization: Bearer $token")" = 200 ] ||
        die "a fresh token is refused by $base"
}
say "logging $USERS users in on each server"
tokens single "$single_BASE"
tokens cluster "$cluster_BASE"
SPREAD=$(for p in "${NODES[@]}"; do redis-cli -p "$p" dbsize; done | paste -sd/)

# A wrk script sending the tokens of a file round robin.
cat >"$WORK/tokens.lua" <<'LUA'
local tokens, i = {}, 0
init = function(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", nil, { Authorization = "Bearer " .. tokens[i] })
end
LUA

# run NAME URL [TOKENS]: appends "NAME req/s p50ms p99ms non2xx round" to $WORK/runs.
run() {
    local name=$1 url=$2 script=()
    [ $# -ge 3 ] && script=(-s "$WORK/tokens.lua" "$url" -- "$3")
    [ $# -ge 3 ] || script=("$url")
    wrk -t2 -c"$CONNECTIONS" -d"${WARMUP}s" "${script[@]}" >/dev/null
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${script[@]}" >"$WORK/wrk.out"
    awk -v name="$name" -v round="$round" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 } /Non-2xx or 3xx responses:/ { bad = $NF }
        END { printf "%s %.0f %.3f %.3f %d %d\n", name, rps, p50, p99, bad, round }' "$WORK/wrk.out" >>"$WORK/runs"
    tail -1 "$WORK/runs" >&2
}
: >"$WORK/runs"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    say "round $round of $ROUNDS: (a) (b1) (b3), ${DURATION}s each at $CONNECTIONS connections"
    run a "$single_BASE/ping"
    run b1 "$single_BASE/me/ping" "$WORK/single.tokens"
    run b3 "$cluster_BASE/me/ping" "$WORK/cluster.tokens"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

[ "$(mean b1 5)" = 0.00 ] && [ "$(mean b3 5)" = 0.00 ] || echo "warning: (b1) or (b3) had non-2xx answers" >&2
A=$(mean a 2) B1=$(mean b1 2) B3=$(mean b3 2)

cat <<EOF

$(nproc) cores, $(redis-server --version | cut -d' ' -f3), wrk -t2 -c$CONNECTIONS, ${DURATION}s per run after ${WARMUP}s warm-up, mean of $ROUNDS rounds, $USERS users' tokens round robin (cluster keys per primary: $SPREAD); load average before $LOAD_BEFORE, after $LOAD_AFTER

| run | requests/s | p50 ms | p99 ms | ratio to (a) | min / median / max over the rounds |
|---|---:|---:|---:|---:|---|
| (a) \`GET /ping\`, no layer | $A | $(mean a 3) | $(mean a 4) | 1.00 | |
| (b1) \`GET /me/ping\`, one Redis | $B1 | $(mean b1 3) | $(mean b1 4) | $(ratio "$B1" "$A") | $(spread b1 a) |
| (b3) \`GET /me/ping\`, three-primary cluster | $B3 | $(mean b3 3) | $(mean b3 4) | $(ratio "$B3" "$A") | $(spread b3 a) |

Cluster over one Redis: $(ratio "$B3" "$B1") × (min / median / max over the rounds: $(spread b3 b1)).
EOF
