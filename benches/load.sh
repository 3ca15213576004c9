#!/usr/bin/env bash
# The load benchmark: `bash benches/load.sh` (see BENCHMARKS.md).
#
# Starts its own redis-server (no persistence) and the example server in release mode on
# free loopback ports, then measures in one run, at 64 connections with wrk:
#   (a) GET /ping (no layer)   (b) GET /me/ping behind MpAuthLayer with a valid token
#   (a') = (a) with (b)'s Authorization header, which no layer reads: the same bytes
#   (c) a malformed token      (d) a well-formed but unknown token
#   (b') = (b) against a second server whose token checks go through CachedTokenStore
#   (b'') = (b) against a third server whose CachedTokenStore tracks Redis (tracking mode)
# plus redis-benchmark's HGET of a real token field at the same concurrency, (b) again
# with 1,000,000 live tokens, Redis bytes per token, and the login path with 1,000 and
# 100,000 existing users, then instructions (callgrind) and system calls (strace) per
# request in the server process for each kind, over a fixed number of requests sent
# one after another on one connection, and the instructions of (a), (b) and (b') again
# with no metrics recorder (MPAUTHX_METRICS=off; every other server has the example's
# default Prometheus recorder; `bash benches/instructions.sh` runs only these counts,
# and the cost of the metrics calls), then `cargo bench --bench phone` (phone binds
# and single-flight access-token refreshes, its own redis-server; benches/phone.rs), and
# last `cargo bench --bench users` (logins on the sqlite, PostgreSQL and MariaDB user
# stores with 1,000 and 100,000 users, its own database servers; benches/users.rs),
# and `cargo bench --bench revocation` (cross-server revocation latency with the
# tracked cache, idle and under wrk, and Redis commands per warm validated request;
# benches/revocation.rs).
# Prints markdown tables, with the load averages
# seen during the run. Targets are reported, not asserted: it exits non-zero only when
# the setup fails. Everything it starts is stopped on exit.
#
# `MODE=cluster bash benches/load.sh` runs the cluster mode instead (benches/cluster.sh).
#
# Knobs (environment): DURATION (s per wrk run, default 10), WARMUP (s, 2), ROUNDS (2),
# CONNECTIONS (64), FILL (live tokens for the second (b), 1000000), LOGINS (per login
# run, 2000), LOGIN_CONCURRENCY (16), CACHE_MS (the (b') server's cache TTL, 1000),
# PROFILE_REQUESTS (requests per kind under callgrind and strace, 2000; 0 skips them),
# PROFILE_DIR (where the callgrind dumps are kept, target/load-profile); PHONE (0 skips
# the phone benchmark, 1), and its own PHONE_BINDS (binds per row, 2000),
# PHONE_CONCURRENCY (16) and REFRESH_ROUNDS (20); USERS (0 skips the user store
# benchmark, 1), which takes LOGINS and LOGIN_CONCURRENCY too, and its own USERS_ROUNDS
# (5); REVOCATION (0 skips the revocation benchmark, 1) and REVOCATION_TRIALS (1000).
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
FILL=${FILL:-1000000}
LOGINS=${LOGINS:-2000}
LOGIN_CONCURRENCY=${LOGIN_CONCURRENCY:-16}
CACHE_MS=${CACHE_MS:-1000}
PROFILE_REQUESTS=${PROFILE_REQUESTS:-2000}
PROFILE_DIR=${PROFILE_DIR:-target/load-profile}
PHONE=${PHONE:-1}
USERS=${USERS:-1}
REVOCATION=${REVOCATION:-1}
REVOCATION_TRIALS=${REVOCATION_TRIALS:-1000}
SMALL=1000

cd "$(dirname "$0")/.."
# The cluster mode compares one Redis with a Redis Cluster: benches/cluster.sh.
[ "${MODE:-}" = cluster ] && exec bash benches/cluster.sh
NAME=load.sh
source benches/common.sh

install wrk wrk
install redis-server redis-server
install redis-benchmark redis-tools
install curl curl
install /usr/bin/time time
if [ "$PROFILE_REQUESTS" -gt 0 ]; then
    install valgrind valgrind
    install strace strace
fi

# A scratch directory; every process added to PIDS is stopped on exit.
scratch

say "building the example server and the fixture (release)"
cargo build --release --example server >&2
cargo bench --bench fixture --no-run >&2
[ "$PHONE" = 0 ] || cargo bench --bench phone --no-run >&2
[ "$USERS" = 0 ] || cargo bench --bench users --no-run >&2
[ "$REVOCATION" = 0 ] || cargo bench --bench revocation --no-run >&2
fixture() { cargo bench -q --bench fixture -- "$@"; }

# Redis without persistence on a free port (REDIS_PORT, REDIS_URL, REDIS_PID; rcli).
start_redis

say "memory per token (100,000 tokens issued through RedisTokenStore)"
rcli flushall >/dev/null
MEM1=$(fixture memory --redis "$REDIS_URL" --tokens 100000 --per-user 1 | awk '/^BYTES_PER_TOKEN/ {print $2}')
rcli flushall >/dev/null
MEM10=$(fixture memory --redis "$REDIS_URL" --tokens 100000 --per-user 10 | awk '/^BYTES_PER_TOKEN/ {print $2}')
rcli flushall >/dev/null

SERVER_PORT=$(free_port)
BASE="http://127.0.0.1:$SERVER_PORT"
DB="$WORK/users.db"
fixture users --db "$DB" --count "$SMALL"
MPAUTHX_LISTEN="127.0.0.1:$SERVER_PORT" MPAUTHX_REDIS_URL="$REDIS_URL" MPAUTHX_DATABASE="$DB" \
    MPAUTHX_VALIDATION_CACHE=off RUST_LOG=warn target/release/examples/server 2>"$WORK/server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_up "$BASE" "$WORK/server.log" "the server"
# (b'): the same server with the validation cache on, on the same Redis.
CACHED_PORT=$(free_port)
CACHED="http://127.0.0.1:$CACHED_PORT"
MPAUTHX_LISTEN="127.0.0.1:$CACHED_PORT" MPAUTHX_REDIS_URL="$REDIS_URL" MPAUTHX_DATABASE="$WORK/users-cached.db" \
    MPAUTHX_VALIDATION_CACHE_MS="$CACHE_MS" RUST_LOG=warn target/release/examples/server 2>"$WORK/cached.log" &
CACHED_PID=$!
PIDS+=("$CACHED_PID")
wait_up "$CACHED" "$WORK/cached.log" "the cached server"
# (b''): the same with the tracked validation cache (the example's default with Redis).
TRACKED_PORT=$(free_port)
TRACKED="http://127.0.0.1:$TRACKED_PORT"
MPAUTHX_LISTEN="127.0.0.1:$TRACKED_PORT" MPAUTHX_REDIS_URL="$REDIS_URL" MPAUTHX_DATABASE="$WORK/users-tracked.db" \
    MPAUTHX_VALIDATION_CACHE=tracking RUST_LOG=warn target/release/examples/server 2>"$WORK/tracked.log" &
TRACKED_PID=$!
PIDS+=("$TRACKED_PID")
wait_up "$TRACKED" "$WORK/tracked.log" "the tracked server"

say "filling $SMALL live tokens"
SAMPLE=$(fixture fill --redis "$REDIS_URL" --users "$SMALL" | awk '/^SAMPLE/ {print $2}')
sign_in "$BASE"
status() { curl -s -o /dev/null -w '%{http_code}' "${3:-$BASE}$1" -H "Authorization: Bearer $2"; }
[ "$(status /me/ping "$TOKEN")" = 200 ] || die "a fresh token is refused"
[ "$(status /me/ping "$TOKEN" "$CACHED")" = 200 ] || die "the cached server refuses a fresh token"
[ "$(status /me/ping "$TOKEN" "$TRACKED")" = 200 ] || die "the tracked server refuses a fresh token"
[ "$(status /me/ping "$SAMPLE")" = 200 ] || die "a filled token is refused: the fill's layout is wrong"
# MALFORMED and UNKNOWN: the tokens of (c) and (d) (benches/common.sh).
[ "$(status /me/ping "$MALFORMED")" = 401 ] || die "the malformed token is not a 401"
[ "$(status /me/ping "$UNKNOWN")" = 401 ] || die "the unknown token is not a 401"

# ticks PID: the CPU time (user + system, in clock ticks) a process has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# wrk NAME URL [TOKEN]: appends "NAME req/s p50ms p99ms non2xx round server-us redis-us
# wrk-us" to $WORK/runs, the last three being CPU time per request of each process.
wrk_run() {
    local name=$1 url=$2 header=() pid=$SERVER_PID server redis
    [ $# -ge 3 ] && header=(-H "Authorization: Bearer $3")
    case $name in bc | Bc) pid=$CACHED_PID ;; bt | Bt) pid=$TRACKED_PID ;; esac
    wrk -t2 -c"$CONNECTIONS" -d"${WARMUP}s" "${header[@]}" "$url" >/dev/null
    server=$(ticks "$pid") redis=$(ticks "$REDIS_PID")
    /usr/bin/time -f '%U %S' -o "$WORK/wrk.time" \
        wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${header[@]}" "$url" >"$WORK/wrk.out"
    server=$(($(ticks "$pid") - server)) redis=$(($(ticks "$REDIS_PID") - redis))
    awk -v name="$name" -v round="$round" -v server="$server" -v redis="$redis" -v tick="$TICK_US" \
        -v wrk="$(awk '{ print $1 + $2 }' "$WORK/wrk.time")" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } / requests in / { n = $1 }
        /^Requests\/sec:/ { rps = $2 } /Non-2xx or 3xx responses:/ { bad = $NF }
        END { printf "%s %.0f %.3f %.3f %d %d %.2f %.2f %.2f\n", name, rps, p50, p99, bad, round,
            server * tick / n, redis * tick / n, wrk * 1000000 / n }' "$WORK/wrk.out" >>"$WORK/runs"
    tail -1 "$WORK/runs" >&2
}
: >"$WORK/runs"
: >"$WORK/load"
load() { printf '%s: %s\n' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/load"; }
load "before the rounds"
for round in $(seq "$ROUNDS"); do
    say "round $round of $ROUNDS: (a) (b) (b') (c) (d), ${DURATION}s each at $CONNECTIONS connections"
    wrk_run a "$BASE/ping"
    wrk_run ah "$BASE/ping" "$TOKEN"
    wrk_run b "$BASE/me/ping" "$TOKEN"
    wrk_run bc "$CACHED/me/ping" "$TOKEN"
    wrk_run bt "$TRACKED/me/ping" "$TOKEN"
    wrk_run c "$BASE/me/ping" "$MALFORMED"
    wrk_run d "$BASE/me/ping" "$UNKNOWN"
    load "after round $round"
done

say "redis-benchmark: HGET of a real token field at $CONNECTIONS connections"
PROBE=$(fixture probe --redis "$REDIS_URL")
KEY=$(awk '/^KEY/ {print $2}' <<<"$PROBE")
FIELD_HEX=$(awk '/^FIELD/ {print $2}' <<<"$PROBE")
FIELD=$(printf "$(sed 's/../\\x&/g' <<<"$FIELD_HEX")")
[ -n "$(rcli hget "$KEY" "$FIELD")" ] || die "the probe field is not found"
redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -n $((DURATION * 60000)) --csv \
    HGET "$KEY" "$FIELD" | tail -1 | tr -d '"' >"$WORK/redis.csv"
# The test name holds the field's raw bytes, commas maybe: count columns from the end.
read -r REDIS_RPS REDIS_P50 REDIS_P99 < <(awk -F, '{print $(NF - 6), $(NF - 3), $(NF - 1)}' "$WORK/redis.csv")

say "login path with $SMALL existing users ($LOGINS logins each, $LOGIN_CONCURRENCY at a time)"
L1C=$(fixture login --base "$BASE" --count "$LOGINS" --concurrency "$LOGIN_CONCURRENCY" --prefix code-small | awk '/^LOGIN/ {print $2, $3, $4, $5}')
L1P=$(fixture login --base "$BASE" --count "$LOGINS" --concurrency "$LOGIN_CONCURRENCY" --prefix profile-small --profile | awk '/^LOGIN/ {print $2, $3, $4, $5}')

say "filling to $FILL live tokens and 100,000 users"
SAMPLE=$(fixture fill --redis "$REDIS_URL" --users $((FILL - SMALL)) --start "$SMALL" | awk '/^SAMPLE/ {print $2}')
[ "$(status /me/ping "$SAMPLE")" = 200 ] || die "a filled token is refused"
KEYS=$(rcli dbsize)
fixture users --db "$DB" --count $((100000 - SMALL)) --start "$SMALL"
[ "$(status /me/ping "$SAMPLE" "$CACHED")" = 200 ] || die "the cached server refuses a filled token"
for round in $(seq "$ROUNDS"); do
    say "round $round of $ROUNDS with $FILL tokens: (a) (b) (b')"
    wrk_run A "$BASE/ping"
    wrk_run B "$BASE/me/ping" "$TOKEN"
    wrk_run Bc "$CACHED/me/ping" "$TOKEN"
    wrk_run Bt "$TRACKED/me/ping" "$TOKEN"
    load "after round $round with $FILL tokens"
done

say "login path with 100,000 existing users"
L2C=$(fixture login --base "$BASE" --count "$LOGINS" --concurrency "$LOGIN_CONCURRENCY" --prefix code-large | awk '/^LOGIN/ {print $2, $3, $4, $5}')
L2P=$(fixture login --base "$BASE" --count "$LOGINS" --concurrency "$LOGIN_CONCURRENCY" --prefix profile-large --profile | awk '/^LOGIN/ {print $2, $3, $4, $5}')

# send (one kind of request, one after another on one connection) and callgrind_server
# (a fresh server under callgrind, instructions per request of each kind) are in
# benches/common.sh.
# strace_server LABEL PID BASE KIND...: system calls per request of each kind, all the
# server's threads traced. Appends "LABEL KIND syscalls-per-request top-calls" to $WORK/syscalls.
strace_server() {
    local label=$1 pid=$2 base=$3 kind tracer
    shift 3
    for kind in "$@"; do
        send "$base" "$kind" 200
        strace -f -c -o "$WORK/strace.out" -p "$(ls /proc/"$pid"/task | paste -sd,)" 2>/dev/null &
        tracer=$!
        sleep 1
        send "$base" "$kind" "$PROFILE_REQUESTS"
        kill -INT "$tracer"
        wait "$tracer" 2>/dev/null || true
        local total top
        total=$(awk '$NF == "total" { print $4 }' "$WORK/strace.out")
        top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $NF, $4 }' "$WORK/strace.out" | sort -k2,2nr | head -4 |
            awk -v c="$PROFILE_REQUESTS" '{ printf "%s%s %.2f", (NR > 1 ? ", " : ""), $1, $2 / c }')
        awk -v l="$label" -v k="$kind" -v c="$PROFILE_REQUESTS" -v t="$total" -v top="$top" \
            'BEGIN { printf "%s %s %.2f %s\n", l, k, t / c, top }' >>"$WORK/syscalls"
        tail -1 "$WORK/syscalls" >&2
    done
}
: >"$WORK/profile"
: >"$WORK/syscalls"
if [ "$PROFILE_REQUESTS" -gt 0 ]; then
    say "system calls per request (strace, $PROFILE_REQUESTS requests of each kind on one connection)"
    strace_server plain "$SERVER_PID" "$BASE" a b c d
    strace_server cached "$CACHED_PID" "$CACHED" b d
    say "instructions per request (callgrind, $PROFILE_REQUESTS requests of each kind on one connection)"
    callgrind_server plain MPAUTHX_VALIDATION_CACHE_MS=0 a b c d
    callgrind_server cached MPAUTHX_VALIDATION_CACHE_MS="$CACHE_MS" b d
    callgrind_server tracked MPAUTHX_VALIDATION_CACHE=tracking b d
    # The same without a metrics recorder (the servers above have the example's default,
    # Prometheus): what the metrics calls cost with none installed.
    callgrind_server plain-off MPAUTHX_VALIDATION_CACHE_MS=0 MPAUTHX_METRICS=off a b
    callgrind_server cached-off MPAUTHX_VALIDATION_CACHE_MS="$CACHE_MS" MPAUTHX_METRICS=off b
    callgrind_server tracked-off MPAUTHX_VALIDATION_CACHE=tracking MPAUTHX_METRICS=off b
fi
: >"$WORK/revocation"
if [ "$REVOCATION" != 0 ]; then
    say "cross-server revocation with the tracked cache (cargo bench --bench revocation)"
    REVOCATION_TRIALS=$REVOCATION_TRIALS cargo bench -q --bench revocation >"$WORK/revocation" ||
        die "the revocation benchmark failed"
fi
: >"$WORK/phone"
if [ "$PHONE" != 0 ]; then
    say "phone binds and access-token refreshes (cargo bench --bench phone)"
    cargo bench -q --bench phone >"$WORK/phone" || die "the phone benchmark failed"
fi
: >"$WORK/users"
if [ "$USERS" != 0 ]; then
    say "logins on each user store (cargo bench --bench users)"
    LOGINS=$LOGINS LOGIN_CONCURRENCY=$LOGIN_CONCURRENCY cargo bench -q --bench users >"$WORK/users" ||
        die "the user store benchmark failed"
fi
load "at the end"

verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t ? "met" : "**not met**") }'; }
A=$(mean a 2) AH=$(mean ah 2) B=$(mean b 2) BC=$(mean bc 2) BT=$(mean bt 2) C=$(mean c 2) D=$(mean d 2)
A2=$(mean A 2) B2=$(mean B 2) BC2=$(mean Bc 2) BT2=$(mean Bt 2)
RBA=$(ratio "$B" "$A") RBCA=$(ratio "$BC" "$A") RBTA=$(ratio "$BT" "$A") RAHA=$(ratio "$AH" "$A") RBTAH=$(ratio "$BT" "$AH") RCA=$(ratio "$C" "$A") RDA=$(ratio "$D" "$A")
RBT2A=$(ratio "$BT2" "$A2")
RBR=$(ratio "$B" "$REDIS_RPS")
RB2=$(ratio "$B2" "$B") RB2A=$(ratio "$B2" "$A2") RBC2A=$(ratio "$BC2" "$A2")
[ "$(mean a 5)" = 0.00 ] && [ "$(mean b 5)" = 0.00 ] && [ "$(mean bc 5)" = 0.00 ] &&
    [ "$(mean B 5)" = 0.00 ] && [ "$(mean Bc 5)" = 0.00 ] ||
    echo "warning: (a), (b) or (b') had non-2xx answers" >&2
# Flat: (b)/(a) with $FILL tokens against (b)/(a) with $SMALL, each (b) beside its own (a),
# so that a drift of the whole machine between the two phases cancels out.
RFLAT=$(ratio "$RB2A" "$RBA")
FLAT=$(awk -v r="$RFLAT" 'BEGIN { print (r >= 0.9 && r <= 1.1 ? "met" : "**not met**") }')
RFLATC=$(ratio "$RBC2A" "$RBCA")
FLATC=$(awk -v r="$RFLATC" 'BEGIN { print (r >= 0.9 && r <= 1.1 ? "met" : "**not met**") }')

cat <<EOF

$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(redis-server --version | cut -d' ' -f3), wrk -t2 -c$CONNECTIONS, ${DURATION}s per run after ${WARMUP}s warm-up, mean of $ROUNDS rounds; (b') has a ${CACHE_MS} ms validation cache

| run | requests/s | p50 ms | p99 ms | ratio | target |
|---|---:|---:|---:|---:|---|
| (a) \`GET /ping\`, no layer | $A | $(mean a 3) | $(mean a 4) | 1.00 | |
| (a') the same with (b)'s \`Authorization\` header (ignored: no layer) | $AH | $(mean ah 3) | $(mean ah 4) | $RAHA × (a) | |
| (b) \`GET /me/ping\`, valid token, $SMALL tokens | $B | $(mean b 3) | $(mean b 4) | $RBA × (a) | ≥ 0.80: $(verdict "$RBA" 0.80) |
| (b') the same, validation cache on (TTL) | $BC | $(mean bc 3) | $(mean bc 4) | $RBCA × (a) | ≥ 0.80: $(verdict "$RBCA" 0.80) |
| (b'') the same, tracked validation cache | $BT | $(mean bt 3) | $(mean bt 4) | $RBTA × (a), $RBTAH × (a') | ≥ 0.95: $(verdict "$RBTA" 0.95) |
| (c) malformed token (401) | $C | $(mean c 3) | $(mean c 4) | $RCA × (a) | ≥ 0.95: $(verdict "$RCA" 0.95) |
| (d) unknown token (401) | $D | $(mean d 3) | $(mean d 4) | $RDA × (a) | |
| redis-benchmark \`HGET\`, -c$CONNECTIONS | $REDIS_RPS | $REDIS_P50 | $REDIS_P99 | (b) = $RBR × Redis | |
| (a) again, $KEYS keys / $FILL tokens | $A2 | $(mean A 3) | $(mean A 4) | | |
| (b) again, $FILL tokens | $B2 | $(mean B 3) | $(mean B 4) | $RB2A × (a), i.e. $RFLAT × the ratio with $SMALL ($RB2 × (b) raw) | within 10 %: $FLAT |
| (b') again, $FILL tokens | $BC2 | $(mean Bc 3) | $(mean Bc 4) | $RBC2A × (a), i.e. $RFLATC × the ratio with $SMALL | within 10 %: $FLATC |
| (b'') again, $FILL tokens | $BT2 | $(mean Bt 3) | $(mean Bt 4) | $RBT2A × (a) | ≥ 0.95: $(verdict "$RBT2A" 0.95) |

| ratio to (a) of the same round, over $ROUNDS rounds | min / median / max |
|---|---|
| (b) / (a) | $(spread b a) |
| (b') / (a) | $(spread bc a) |
| (b'') / (a) | $(spread bt a) |
| (b'') / (a') | $(spread bt ah) |
| (c) / (a) | $(spread c a) |
| (d) / (a) | $(spread d a) |
| (b) / (a), $FILL tokens | $(spread B A) |
| (b') / (a), $FILL tokens | $(spread Bc A) |
| (b'') / (a), $FILL tokens | $(spread Bt A) |

CPU time per request (user + system, µs; mean of the rounds): with both cores busy,
requests/s is about 2 cores / the total, so (a)'s total over another's predicts the
ratio of requests/s without depending on how the cores were shared.

| run | server | Redis | wrk | total | (a)'s total / this total |
|---|---:|---:|---:|---:|---:|
$(for n in a ah b bc bt c d; do
    awk -v n="$n" -v title="$(case $n in a) echo "(a) no layer" ;; ah) echo "(a') no layer, with the header" ;; b) echo "(b) valid token" ;; bc) echo "(b') valid token, cache on" ;; bt) echo "(b'') valid token, tracked cache" ;; c) echo "(c) malformed token" ;; d) echo "(d) unknown token" ;; esac)" '
        $1 == "a" { ta += $7 + $8 + $9; ca++ } $1 == n { s += $7; r += $8; w += $9; c++ }
        END { t = (s + r + w) / c; printf "| %s | %.1f | %.1f | %.1f | %.1f | %.2f |\n", title, s / c, r / c, w / c, t, (ta / ca) / t }' "$WORK/runs"
done)

Load averages (1, 5, 15 min) during the run:

$(sed 's/^/- /' "$WORK/load")

| Redis memory, 100,000 tokens issued through \`RedisTokenStore\` | bytes per token | target |
|---|---:|---|
| one token per user | $MEM1 | ≤ 256: $(awk -v m="$MEM1" 'BEGIN { print (m <= 256 ? "met" : "**not met**") }') |
| ten tokens per user | $MEM10 | |

| \`POST /auth/authorize\`, $LOGINS logins, $LOGIN_CONCURRENCY at a time | logins/s | p50 ms | p99 ms | failures |
|---|---:|---:|---:|---:|
| code only, $SMALL users | $(sed "s/ / | /g" <<<"$L1C") |
| code + encrypted profile, $SMALL users | $(sed 's/ / | /g' <<<"$L1P") |
| code only, 100,000 users | $(sed 's/ / | /g' <<<"$L2C") |
| code + encrypted profile, 100,000 users | $(sed 's/ / | /g' <<<"$L2P") |
EOF

if [ "$PROFILE_REQUESTS" -gt 0 ]; then
    # row LABEL KIND TITLE: one row of the per-request table.
    row() {
        local label=$1 kind=$2 title=$3
        printf '| %s | %s | %s |\n' "$title" \
            "$(awk -v l="$label" -v k="$kind" '$1 == l && $2 == k { print $3 }' "$WORK/profile")" \
            "$(awk -v l="$label" -v k="$kind" '$1 == l && $2 == k { $1 = $2 = ""; sub(/^ +/, ""); sub(/ /, " ("); print $0 ")" }' "$WORK/syscalls")"
    }
    cat <<EOF

Per request in the server process, $PROFILE_REQUESTS requests of each kind one after another on one connection (callgrind dumps in $PROFILE_DIR; the example server's Prometheus recorder unless the row says none):

| run | instructions (callgrind) | system calls (strace: all, then the most frequent) |
|---|---:|---|
$(row plain a "(a) \`GET /ping\`, no layer")
$(row plain b "(b) valid token")
$(row cached b "(b') valid token, validation cache on")
$(row plain c "(c) malformed token")
$(row plain d "(d) unknown token")
$(row cached d "(d') unknown token, validation cache on")
$(row tracked b "(b'') valid token, tracked validation cache")
$(row tracked d "(d'') unknown token, tracked validation cache")
$(row plain-off a "(a) \`GET /ping\`, no layer, no metrics recorder (\`MPAUTHX_METRICS=off\`)")
$(row plain-off b "(b) valid token, no metrics recorder")
$(row cached-off b "(b') valid token, validation cache on, no metrics recorder")
$(row tracked-off b "(b'') valid token, tracked validation cache, no metrics recorder")

$(awk '$1 == "plain" && $2 == "a" { a = $3 } $1 == "tracked" && $2 == "b" { t = $3 }
    $1 == "plain-off" && $2 == "a" { ao = $3 } $1 == "tracked-off" && $2 == "b" { to = $3 }
    END { if (a && t) printf "(b%s) / (a) instructions: %.2f with the Prometheus recorder, %.2f without one; target ≤ 1.20: %s with, %s without\n",
        "\047\047", t / a, (ao ? to / ao : 0), (t / a <= 1.2 ? "met" : "**not met**"), (ao && to / ao <= 1.2 ? "met" : "**not met**") }' "$WORK/profile")
EOF
fi

# The revocation benchmark's own tables (benches/revocation.rs).
[ "$REVOCATION" = 0 ] || cat "$WORK/revocation"

# The phone benchmark's own tables (benches/phone.rs), with its load averages.
[ "$PHONE" = 0 ] || cat "$WORK/phone"

# The user store benchmark's own tables (benches/users.rs), with its load averages.
[ "$USERS" = 0 ] || cat "$WORK/users"
