#!/usr/bin/env bash
# Replication benchmark (docs/benchmarks.md "Replication"): lag from a writer's acknowledgement to
# the record's arrival at WAL-stream subscribers, measured by bench_stream (1 KiB values), in the
# topologies of the relayer issue, with PASS/MISS against the goals:
#
#   subs100   100 stream subscribers on one writer at 2,000 writes/s: p99 <= 25 ms
#   subs1000  1,000 stream subscribers at 200 writes/s: p99 <= 100 ms
#   tree      writer -> 3 relayers -> 9 relayers (13 processes), 1,000 writes/s, one subscriber on
#             each leaf relayer: p99 end to end <= 50 ms; then every relayer's RssAnon after 5 s
#             idle: <= 32 MiB
#   fanout    the writer's maximum write rate with 0, 10 and 100 subscribers: with 10 >= 80 % of
#             with 0; with 100 the bytes/s delivered; upstream memory per subscriber <= 256 KiB
#
#   tests/bench/bench_replication.sh                 every scenario, about 2 minutes
#   tests/bench/bench_replication.sh --only "tree"   a subset
#   tests/bench/bench_replication.sh --seconds 5     load seconds per measurement (default 10)
#   tests/bench/bench_replication.sh --markdown FILE also write the results table as markdown
#
# Builds release binaries in build-bench/. Every process started here runs on 127.0.0.1 with port
# 0 and a ports file, and is stopped by its PID on exit. Data lives in build-bench/repl-bench-data
# (the real disk) and is removed at the end; logs stay in build-bench/bench-logs/repl-<time>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=$ROOT/build-bench

ONLY="subs100 subs1000 tree fanout"
SECONDS_LOAD=10
MARKDOWN=
while [ $# -gt 0 ]; do
    case $1 in
    --only) ONLY=$2; shift ;;
    --seconds) SECONDS_LOAD=$2; shift ;;
    --markdown) MARKDOWN=$2; shift ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

for tool in curl python3; do
    command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

bench_build writer/unison-writer relayer/unison-relayer tests/bench/bench_stream
WRITER=$BUILD/writer/unison-writer
RELAYER=$BUILD/relayer/unison-relayer
BENCH=$BUILD/tests/bench/bench_stream
bench_workspace repl
# 1,000 subscribers need as many descriptors in bench_stream and in the writer.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true


# start_writer NAME -> W_PID, W_HTTP
start_writer() {
    local dir=$DATA/$1
    mkdir -p "$dir"
    "$WRITER" -d "$dir/data" --http 127.0.0.1:0 --resp off --raft 127.0.0.1:0 \
        --ports-file "$dir/ports.json" --log-level warn >"$LOGS/$1.log" 2>&1 &
    W_PID=$!
    PIDS+=("$W_PID")
    wait_ports "$W_PID" "$dir/ports.json" "$LOGS/$1.log"
    W_HTTP=$(port_of "$dir/ports.json" http)
    wait_writer_ready "$W_HTTP"
}

# start_relayer NAME UPSTREAM_HTTP_PORT -> R_PID, R_HTTP
start_relayer() {
    local dir=$DATA/$1
    mkdir -p "$dir"
    "$RELAYER" --upstream "http://127.0.0.1:$2" -d "$dir/data" --http 127.0.0.1:0 --resp off \
        --id "$1" --ports-file "$dir/ports.json" --log-level warn >"$LOGS/$1.log" 2>&1 &
    R_PID=$!
    PIDS+=("$R_PID")
    wait_ports "$R_PID" "$dir/ports.json" "$LOGS/$1.log"
    R_HTTP=$(port_of "$dir/ports.json" http)
}

# wait_following PORT: the relayer on PORT serves namespace default (bootstrapped and streaming).
wait_following() {
    local i
    for ((i = 0; i < 300; i++)); do
        curl -sf "http://127.0.0.1:$1/status/upstream" 2>/dev/null | grep -q '"streaming"' &&
            return 0
        sleep 0.1
    done
    echo "relayer on port $1 is not streaming:" >&2
    curl -s "http://127.0.0.1:$1/status/upstream" >&2 || true
    exit 1
}

rss_anon_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }

# --- results --------------------------------------------------------------------------------------
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }
judge() { # VALUE OP GOAL -> PASS/MISS
    python3 -c 'import sys; v,op,g=float(sys.argv[1]),sys.argv[2],float(sys.argv[3]); print("PASS" if (v<=g if op=="le" else v>=g) else "MISS")' "$1" "$2" "$3"
}
metric() { # LOG NAME
    sed -n "s/^metric=$2 value=\([^ ]*\) .*/\1/p" "$1" | tail -1
}

run_bench() { # LOG ARGS...: bench_stream, its output kept in LOG; a failed check is reported
    local log=$1
    shift
    if ! "$BENCH" "$@" >"$log" 2>&1; then
        echo "    bench_stream reported missing records or errors:" >&2
        grep -v '^metric' "$log" | tail -5 >&2
        grep -E 'missing|failed|errors' "$log" >&2 || true
    fi
}

subs_scenario() { # NAME SUBSCRIBERS RATE GOAL_P99_MS
    local log=$LOGS/$1.txt
    echo "=== $1: $2 subscribers on one writer at $3 writes/s for ${SECONDS_LOAD}s"
    start_writer "w-$1"
    run_bench "$log" --writer "127.0.0.1:$W_HTTP" --stream "127.0.0.1:$W_HTTP" \
        --subscribers "$2" --rate "$3" --seconds "$SECONDS_LOAD" --upstream-pid "$W_PID"
    local p50 p99 max rate kb miss
    p50=$(metric "$log" lag_p50_ms) p99=$(metric "$log" lag_p99_ms) max=$(metric "$log" lag_max_ms)
    rate=$(metric "$log" writes_per_s) kb=$(metric "$log" upstream_kb_per_subscriber)
    miss=$(metric "$log" records_missing)
    row "$2 subscribers, $3 writes/s: lag p50 / p99 / max" "p99 <= $4 ms" \
        "$p50 / $p99 / $max ms ($rate writes/s, $miss missing)" "$(judge "$p99" le "$4")"
    row "$2 subscribers: writer memory per subscriber" "<= 256 KiB" "$kb KiB" \
        "$(judge "$kb" le 256)"
    stop_all
}

tree_scenario() {
    local log=$LOGS/tree.txt i j mid leaves=() relayer_pids=()
    echo "=== tree: writer -> 3 relayers -> 9 relayers, 1,000 writes/s for ${SECONDS_LOAD}s"
    start_writer w-tree
    local wpid=$W_PID whttp=$W_HTTP
    for i in 1 2 3; do
        start_relayer "r$i" "$whttp"
        relayer_pids+=("$R_PID")
        mid=$R_HTTP
        wait_following "$mid"
        for j in 1 2 3; do
            start_relayer "r$i$j" "$mid"
            relayer_pids+=("$R_PID")
            leaves+=("127.0.0.1:$R_HTTP")
        done
    done
    for i in "${leaves[@]}"; do
        wait_following "${i#127.0.0.1:}"
    done
    local streams
    streams=$(IFS=,; echo "${leaves[*]}")
    run_bench "$log" --writer "127.0.0.1:$whttp" --stream "$streams" --subscribers 9 \
        --rate 1000 --seconds "$SECONDS_LOAD" --upstream-pid "$wpid"
    local p50 p99 max miss
    p50=$(metric "$log" lag_p50_ms) p99=$(metric "$log" lag_p99_ms) max=$(metric "$log" lag_max_ms)
    miss=$(metric "$log" records_missing)
    row "writer -> 3 -> 9 relayers, 1,000 writes/s: lag at the 9 leaves p50 / p99 / max" \
        "p99 <= 50 ms" "$p50 / $p99 / $max ms ($miss missing)" "$(judge "$p99" le 50)"
    sleep 5
    local worst=0 kb
    for i in "${relayer_pids[@]}"; do
        kb=$(rss_anon_kb "$i")
        [ "$kb" -gt "$worst" ] && worst=$kb
    done
    row "idle relayer RssAnon (largest of 12, 5 s after the load)" "<= 32 MiB" \
        "$((worst / 1024)) MiB ($worst KiB)" "$(judge "$worst" le 32768)"
    stop_all
}

fanout_scenario() {
    local n log rate0= rate10= bytes100= kb100=
    echo "=== fanout: maximum write rate with 0, 10 and 100 subscribers"
    for n in 0 10 100; do
        start_writer "w-fanout-$n"
        log=$LOGS/fanout-$n.txt
        run_bench "$log" --writer "127.0.0.1:$W_HTTP" --stream "127.0.0.1:$W_HTTP" \
            --subscribers "$n" --rate 1000000 --connections 64 --seconds "$SECONDS_LOAD" \
            --upstream-pid "$W_PID"
        case $n in
        0) rate0=$(metric "$log" writes_per_s) ;;
        10) rate10=$(metric "$log" writes_per_s) ;;
        100)
            bytes100=$(metric "$log" delivered_mib_per_s)
            kb100=$(metric "$log" upstream_kb_per_subscriber)
            row "100 subscribers at the maximum rate: delivered" "reported" \
                "$bytes100 MiB/s at $(metric "$log" writes_per_s) writes/s, $kb100 KiB per subscriber" ""
            ;;
        esac
        stop_all
    done
    local ratio
    ratio=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) / float(sys.argv[1])))' "$rate0" "$rate10")
    row "write rate with 10 subscribers / with none" ">= 0.80" \
        "$ratio ($rate10 / $rate0 writes/s)" "$(judge "$ratio" ge 0.80)"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for s in $ONLY; do
    case $s in
    subs100) subs_scenario subs100 100 2000 25 ;;
    subs1000) subs_scenario subs1000 1000 200 100 ;;
    tree) tree_scenario ;;
    fanout) fanout_scenario ;;
    *) echo "unknown scenario: $s" >&2; exit 2 ;;
    esac
done

{
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS_LOAD}s per load, load average $LOAD0 before and" \
        "$(cut -d' ' -f1-3 /proc/loadavg) after; binaries built from $BUILT_AT"
    echo "| figure | goal | measured | result |"
    echo "|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo "logs: $LOGS"
} | tee -a "$LOGS/summary.md"
[ -n "$MARKDOWN" ] && cp "$LOGS/summary.md" "$MARKDOWN"
exit 0
