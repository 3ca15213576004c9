# Shared by the load benchmark's scripts (sourced, not run): messages, installing tools,
# and the arithmetic of the result tables. A script sets NAME before sourcing.

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
