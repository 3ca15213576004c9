#!/usr/bin/env bash
# Instructions per request on the hot path, with and without a metrics recorder:
# `bash benches/instructions.sh` (under a minute once the server is built; see
# BENCHMARKS.md, "Metrics on the hot path"). The callgrind part of benches/load.sh, run
# on its own, with and without a recorder.
#
# Builds the example server in release mode, starts its own redis-server (no
# persistence, a temporary directory) on a free loopback port and one example server to
# log the user "bench" in through its WeChat simulator (the token is in Redis, so every
# server below accepts it), then starts four fresh example servers on that Redis under
# `valgrind --tool=callgrind`, two with MPAUTHX_METRICS=off (no recorder installed) and
# two with the example's default Prometheus recorder, and counts the instructions per
# request in the server process over PROFILE_REQUESTS requests of each kind, sent one
# after another on one keep-alive connection after a warm-up of 200:
#   (a)  GET /ping, no layer
#   (b)  GET /me/ping behind MpAuthLayer, a valid token (one HGET per request)
#   (b') the same with MPAUTHX_VALIDATION_CACHE_MS=CACHE_MS (CachedTokenStore: hits)
#   (b'') the same with MPAUTHX_VALIDATION_CACHE=tracking (the tracked cache: hits)
# each with no recorder and with the Prometheus recorder. From each dump it reads, with
# `callgrind_annotate --inclusive=yes`, the instructions per request spent in the
# crate's `mpauthx::instruments::` functions (all its metrics calls, with everything
# they call); from the two (b') dumps, the same by function and the crate's calls into
# `metrics::` symbols (the metrics crate, and the recorder behind it): with no recorder,
# what the metrics calls cost when nothing records them. The totals of two server
# processes differ by about 1 % whatever they do (heap layout, how often the runtime's
# threads park), more than the metrics calls cost; the inclusive counts do not move.
# Prints markdown tables. Reports, asserts nothing: it exits non-zero only when the
# setup fails. Everything it starts is stopped on exit; the dumps are kept.
#
# Knobs (environment): PROFILE_REQUESTS (requests per kind, 2000), CACHE_MS (the (b')
# servers' cache TTL, 1000), PROFILE_DIR (where the callgrind dumps are kept,
# target/instructions-profile: LABEL.PID.N, N the kinds in the order above).
set -euo pipefail

PROFILE_REQUESTS=${PROFILE_REQUESTS:-2000}
CACHE_MS=${CACHE_MS:-1000}
PROFILE_DIR=${PROFILE_DIR:-target/instructions-profile}

cd "$(dirname "$0")/.."
NAME=instructions.sh
source benches/common.sh
[ "$PROFILE_REQUESTS" -gt 0 ] || die "PROFILE_REQUESTS must be at least 1"

install redis-server redis-server
install redis-cli redis-tools
install curl curl
install valgrind valgrind
install python3 python3

# A scratch directory; every process added to PIDS is stopped on exit.
scratch

say "building the example server (release)"
cargo build --release --example server >&2

# Redis without persistence on a free port (REDIS_PORT, REDIS_URL, REDIS_PID; rcli).
start_redis

say "logging in through the simulator"
PORT=$(free_port)
MPAUTHX_LISTEN="127.0.0.1:$PORT" MPAUTHX_REDIS_URL="$REDIS_URL" MPAUTHX_DATABASE="$WORK/users.db" \
    MPAUTHX_METRICS=off RUST_LOG=warn target/release/examples/server 2>"$WORK/server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_up "http://127.0.0.1:$PORT" "$WORK/server.log" "the server"
sign_in "http://127.0.0.1:$PORT"
kill "$SERVER_PID" 2>/dev/null || true
wait "$SERVER_PID" 2>/dev/null || true

say "instructions per request (callgrind, $PROFILE_REQUESTS requests of each kind on one connection)"
: >"$WORK/profile"
callgrind_server plain-off MPAUTHX_VALIDATION_CACHE_MS=0 MPAUTHX_METRICS=off a b
callgrind_server plain-on MPAUTHX_VALIDATION_CACHE_MS=0 MPAUTHX_METRICS=prometheus a b
callgrind_server cached-off MPAUTHX_VALIDATION_CACHE_MS="$CACHE_MS" MPAUTHX_METRICS=off b
callgrind_server cached-on MPAUTHX_VALIDATION_CACHE_MS="$CACHE_MS" MPAUTHX_METRICS=prometheus b
callgrind_server tracked-off MPAUTHX_VALIDATION_CACHE=tracking MPAUTHX_METRICS=off b
callgrind_server tracked-on MPAUTHX_VALIDATION_CACHE=tracking MPAUTHX_METRICS=prometheus b

# count LABEL KIND: instructions per request of one kind on one server; dump LABEL KIND:
# its callgrind dump.
count() { awk -v l="$1" -v k="$2" '$1 == l && $2 == k { print $3 }' "$WORK/profile"; }
dump() { awk -v l="$1" -v k="$2" '$1 == l && $2 == k { print $4 }' "$WORK/profile"; }

# inclusive DUMP REGEX: "instructions-per-request function" for each function whose name
# matches REGEX, from callgrind_annotate --inclusive=yes (its cost with everything it
# calls), most expensive first. The functions must not call one another (the regexes
# below leave out closures), or their sum counts twice.
inclusive() {
    callgrind_annotate --inclusive=yes --threshold=100 "$1" |
        awk -v re="$2" -v c="$PROFILE_REQUESTS" '
            $1 ~ /^[0-9,]+$/ {
                n = $1; gsub(/,/, "", n)
                f = $0; sub(/^ *[0-9,]+ *(\([^)]*\))? */, "", f); sub(/^[^:]*:/, "", f); sub(/ \[[^]]*\]$/, "", f)
                if (f ~ re) printf "%.1f %s\n", n / c, f
            }'
}
# into_metrics DUMP: the inclusive cost per request of every call from the crate (an
# `mpauthx::` function) into the metrics crate or the recorder behind it (a symbol of
# `metrics::`, `metrics_util::` or `metrics_exporter_prometheus::`), as
# "instructions-per-request callee"; from callgrind_annotate --tree=caller. Only the
# crate's own calls count, so that a call nested in another counts once.
into_metrics() {
    callgrind_annotate --inclusive=yes --tree=caller --threshold=100 "$1" |
        awk -v c="$PROFILE_REQUESTS" '
            function name(s) { sub(/^ *[0-9,]+ *(\([^)]*\))? *[<*] */, "", s); sub(/^[^:]*:/, "", s)
                sub(/ \([0-9]+x\)/, "", s); sub(/ \[[^]]*\]$/, "", s); return s }
            /^ *[0-9,]+ .*< / { callers[++nc] = $0; next }
            /^ *[0-9,]+ .*\* / {
                f = name($0)
                if (f ~ /(^|[^a-z_])metrics(_util|_exporter_prometheus)?::/)
                    for (i = 1; i <= nc; i++) if (name(callers[i]) ~ /^mpauthx::/) {
                        n = callers[i]; sub(/^ */, "", n); sub(/ .*/, "", n); gsub(/,/, "", n)
                        cost[f] += n
                    }
                nc = 0; next
            }
            /^$/ { nc = 0 }
            END { for (f in cost) printf "%.1f %s\n", cost[f] / c, f }' | sort -k1,1gr
}
total() { awk '{ s += $1 } END { printf "%.1f", s }' "$@"; }

# row LABEL KIND TITLE: the totals with no recorder and with the Prometheus recorder,
# the inclusive cost of the metrics calls (the mpauthx::instruments:: functions) in each,
# and the differences.
row() {
    local off on moff mon
    off=$(count "$1-off" "$2") on=$(count "$1-on" "$2")
    moff=$(inclusive "$(dump "$1-off" "$2")" '^mpauthx::instruments::[a-z_]+$' | total)
    mon=$(inclusive "$(dump "$1-on" "$2")" '^mpauthx::instruments::[a-z_]+$' | total)
    awk -v t="$3" -v off="$off" -v on="$on" -v moff="$moff" -v mon="$mon" 'BEGIN {
        printf "| %s | %d | %.0f | %d | %.0f | %+d (%+.1f %%) | %+.0f |\n", t, off, moff, on, mon,
            on - off, 100 * (on - off) / off, mon - moff }'
}

# The breakdown of (b') with the validation cache, no recorder and the Prometheus one.
OFF_DUMP=$(dump cached-off b) ON_DUMP=$(dump cached-on b)
inclusive "$OFF_DUMP" '^mpauthx::instruments::[a-z_]+$' >"$WORK/instruments-off"
inclusive "$ON_DUMP" '^mpauthx::instruments::[a-z_]+$' >"$WORK/instruments-on"
into_metrics "$OFF_DUMP" >"$WORK/metrics-off"
into_metrics "$ON_DUMP" >"$WORK/metrics-on"
# The Prometheus recorder's upkeep task runs every 5 s, not per request: its share of
# the dump depends on how long the requests took under valgrind.
UPKEEP=$(inclusive "$ON_DUMP" 'PrometheusHandle::run_upkeep$' | total)
# per_function WHAT: a row per function of WHAT (instruments or metrics), no recorder and
# the Prometheus recorder, the most expensive with no recorder first.
per_function() {
    awk -v what="$1" '
        FNR == 1 { file++ }
        { n = $1; $1 = ""; sub(/^ /, ""); if (!($0 in seen)) { seen[$0] = 1; order[++k] = $0 }; v[file, $0] = n }
        END { for (i = 1; i <= k; i++) { f = order[i]
            printf "| %s `%s` | %s | %s |\n", (what == "metrics" ? "call into" : "in"), f,
                ((1, f) in v ? v[1, f] : "0"), ((2, f) in v ? v[2, f] : "0") } }' "$WORK/$1-off" "$WORK/$1-on"
}

cat <<EOF

$(valgrind --version), $(rustc --version | cut -d' ' -f1-2), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; instructions per request in the server process, $PROFILE_REQUESTS requests of each kind one after another on one connection (dumps in $PROFILE_DIR); "metrics calls" is the inclusive cost of the \`mpauthx::instruments::\` functions in the same dump (\`callgrind_annotate --inclusive=yes\`)

| run | no recorder (\`MPAUTHX_METRICS=off\`) | its metrics calls | Prometheus recorder (the default) | its metrics calls | difference of the totals | difference of the metrics calls |
|---|---:|---:|---:|---:|---:|---:|
$(row plain a "(a) \`GET /ping\`, no layer")
$(row plain b "(b) \`GET /me/ping\`, valid token")
$(row cached b "(b') valid token, validation cache on (${CACHE_MS} ms)")
$(row tracked b "(b'') valid token, tracked validation cache")

(b'') / (a), instructions: $(awk -v t="$(count tracked-off b)" -v a="$(count plain-off a)" 'BEGIN { printf "%.2f", t / a }') with no recorder, $(awk -v t="$(count tracked-on b)" -v a="$(count plain-on a)" 'BEGIN { printf "%.2f", t / a }') with the Prometheus recorder (target ≤ 1.20)

(b'), inclusive instructions per request; the calls into the metrics crate are the crate's own (from an \`mpauthx::\` function), each with everything under it, the recorder's work included:

| spent | no recorder | Prometheus recorder |
|---|---:|---:|
| in the \`mpauthx::instruments::\` functions, all | $(total "$WORK/instruments-off") | $(total "$WORK/instruments-on") |
$(per_function instruments)
| in the crate's calls into \`metrics::\` (and the recorder behind it), all | $(total "$WORK/metrics-off") | $(total "$WORK/metrics-on") |
$(per_function metrics)
| in the Prometheus recorder's upkeep task (every 5 s, not per request: its share here) | | $UPKEEP |
EOF
