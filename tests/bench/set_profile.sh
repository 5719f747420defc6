#!/usr/bin/env bash
# Where a RESP SET load's time and CPU go in one writer (issue 3; docs/benchmarks.md "RESP SET"
# sections): starts a fresh unison-writer, runs the writer benchmark's redis-benchmark load
# against it, and prints
#   - the disk's MB written and busy milliseconds during the load (/proc/diskstats),
#   - redis-benchmark's CSV line (rate, latencies),
#   - the CPU of each writer thread per request, in microseconds (/proc/PID/task/TID/stat),
#   - the write stages, mean ms per write (queue / commit / apply / deliver, from /metrics).
#
#   tests/bench/set_profile.sh BINARY [TESTS]   TESTS: redis-benchmark -t (default: set)
#
# Environment: UD_PROFILE_DIR (data directory, default a new one under build-bench; on the real
# disk, never tmpfs), UD_PROFILE_EXTRA (more writer flags, e.g. "--set
# storage.memtable_bytes=2GiB"), UD_PROFILE_DISK (the block device in /proc/diskstats, default
# the one holding the data directory). The writer is stopped by PID and its data removed at the
# end; the load is bounded (120 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
WRITER=$1
TESTS=${2:-set}
N=500000
for tool in redis-benchmark curl python3; do
    command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
DIR=${UD_PROFILE_DIR:-$PWD/build-bench/set-profile-$$}
rm -rf "$DIR"
mkdir -p "$DIR"
DISK=${UD_PROFILE_DISK:-$(basename "$(df --output=source "$DIR" | tail -1)")}

WPID=
cleanup() {
    [ -n "$WPID" ] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

# shellcheck disable=SC2086 # UD_PROFILE_EXTRA is a list of flags
"$WRITER" -d "$DIR/data" --http 127.0.0.1:0 --resp 127.0.0.1:0 --raft 127.0.0.1:0 \
    --ports-file "$DIR/ports.json" --log-level warn ${UD_PROFILE_EXTRA:-} >"$DIR/writer.log" 2>&1 &
WPID=$!
for _ in $(seq 100); do
    [ -s "$DIR/ports.json" ] && break
    kill -0 "$WPID" 2>/dev/null || { cat "$DIR/writer.log" >&2; exit 1; }
    sleep 0.1
done
port() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$DIR/ports.json" "$1"; }
RESP=$(port resp)
HTTP=$(port http)
sleep 1

threads() { # thread name-TID and CPU ticks, one per line
    local t
    for t in /proc/"$WPID"/task/*; do
        echo "$(cat "$t/comm")-${t##*/} $(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')"
    done | sort
}
disk() { awk -v d="$DISK" '$3 == d { print $10, $13 }' /proc/diskstats; }

curl -sf "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics-before"
threads >"$DIR/cpu-before"
read -r sectors0 busy0 < <(disk)
timeout 120 redis-benchmark -h 127.0.0.1 -p "$RESP" -t "$TESTS" -d 1024 -c 50 -P 16 -r 100000 \
    -n "$N" --csv >"$DIR/rb.csv"
read -r sectors1 busy1 < <(disk)
threads >"$DIR/cpu-after"
curl -sf "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics-after"

echo "disk $DISK: $(((sectors1 - sectors0) / 2048)) MB written, busy $((busy1 - busy0)) ms"
grep -i -E "^\"(${TESTS//,/|})\"" "$DIR/rb.csv" || cat "$DIR/rb.csv"
# Requests of the load: N per test named.
requests=$((N * $(tr ',' '\n' <<<"$TESTS" | wc -l)))
join "$DIR/cpu-before" "$DIR/cpu-after" | awk -v n="$requests" -v hz="$(getconf CLK_TCK)" '
    { d = ($3 - $2) * 1e6 / hz / n; total += d; printf "%-24s %.2f us/request\n", $1, d }
    END { printf "%-24s %.2f us/request\n", "all threads", total }'
for st in queue commit apply deliver; do
    awk -v st="$st" 'FNR == 1 { f++ } /^unison_write_requests_staged_total / { n[f] = $2 }
        $0 ~ "^unison_write_stage_seconds_total\\{stage=\"" st "\"\\}" { t[f] = $2 }
        END { if (n[2] > n[1]) printf "%s %.3f ms  ", st, (t[2] - t[1]) * 1000 / (n[2] - n[1]) }' \
        "$DIR/metrics-before" "$DIR/metrics-after"
done
echo
