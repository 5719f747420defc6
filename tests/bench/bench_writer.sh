#!/usr/bin/env bash
# Writer benchmark (issue 3, docs/benchmarks.md "Writer"): unison-writer against redis-server with
# the same durability (AOF, appendfsync always: a reply only after fsync), in the same run, with
# identical client options, then HTTP PUTs over h2c. Prints medians, ratios, p50/p99 and PASS/MISS.
#
#   tests/bench/bench_writer.sh                  3 runs, full sizes, about 3-6 minutes
#   tests/bench/bench_writer.sh --quick          small sizes, 1 run: checks the harness only
#   tests/bench/bench_writer.sh --runs 5         runs (UD_BENCH_RUNS; default 3)
#   tests/bench/bench_writer.sh --only resp      resp (redis-benchmark pair) and/or http (h2load)
#   tests/bench/bench_writer.sh --writer BIN     benchmark this unison-writer (no build)
#   tests/bench/bench_writer.sh --markdown FILE  also write the results table as markdown
#   tests/bench/bench_writer.sh --perf SECONDS   record `perf record -g` on the writer for that long
#                                                during the first run's SET load (perf.data in logs)
#
# Each run starts a fresh unison-writer (port 0, ports file) and a fresh redis-server (a free
# loopback port, its own data dir), runs redis-benchmark against both (the order alternates
# between runs), then h2load PUTs against the writer, and stops both by PID. Data lives in
# build-bench/writer-bench-data (the real disk: tmpfs would hide every fsync) and is removed at
# the end; logs stay in build-bench/bench-logs/writer-<time>/. Everything started here is stopped
# by PID on exit, and the whole run is bounded by UD_BENCH_BUDGET seconds (default 570).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=$ROOT/build-bench

RUNS=${UD_BENCH_RUNS:-3}
QUICK=${UD_BENCH_QUICK:-0}
BUDGET=${UD_BENCH_BUDGET:-570}
ONLY="resp http"
MARKDOWN=
WRITER=
BUILT_AT=
PERF_SECONDS=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --writer) WRITER=$2; shift ;;
    --markdown) MARKDOWN=$2; shift ;;
    --perf) PERF_SECONDS=$2; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

# The issue's client options; both servers get exactly these.
RB_N=500000
RB_OPTS=(-t 'set,get' -d 1024 -c 50 -P 16 -r 100000)
# HTTP: H2_PROCS h2load processes, each one h2c connection with H2_STREAMS concurrent streams (h2o
# allows 100 per connection) and its own list of distinct keys (h2load replays a URI list from its
# start in every client, so distinct keys across clients need one list per process). 8 x 100 keeps
# 800 requests outstanding, as redis-benchmark's 50 clients x 16 pipelined do.
H2_N=240000
H2_PROCS=8
H2_STREAMS=100
if [ "$QUICK" = 1 ]; then
    RB_N=50000
    H2_N=24000
    [ -z "${UD_BENCH_RUNS:-}" ] && RUNS=1
fi
SET_GOAL=1.0 SET_TARGET=1.5 GET_GOAL=1.0 HTTP_GOAL=60000

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

for tool in redis-server redis-benchmark redis-cli h2load curl python3; do
    command -v $tool >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

if [ -z "$WRITER" ]; then
    bench_build writer/unison-writer
    WRITER=$BUILD/writer/unison-writer
fi
[ -x "$WRITER" ] || { echo "not executable: $WRITER" >&2; exit 1; }

bench_workspace writer

bench_budget

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WRITER_PID='' REDIS_PID=''
start_writer() { # RUN -> WRITER_PID, W_RESP, W_HTTP
    local dir=$DATA/writer-$1
    mkdir -p "$dir"
    "$WRITER" -d "$dir/data" --http 127.0.0.1:0 --resp 127.0.0.1:0 --raft 127.0.0.1:0 \
        --ports-file "$dir/ports.json" --log-level warn >"$LOGS/writer-$1.log" 2>&1 &
    WRITER_PID=$!
    PIDS+=("$WRITER_PID")
    wait_ports "$WRITER_PID" "$dir/ports.json" "$LOGS/writer-$1.log"
    W_RESP=$(port_of "$dir/ports.json" resp)
    W_HTTP=$(port_of "$dir/ports.json" http)
    wait_writer_ready "$W_HTTP"
}

start_redis() { # RUN -> REDIS_PID, R_PORT
    local dir=$DATA/redis-$1 i
    mkdir -p "$dir"
    R_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$R_PORT" --appendonly yes --appendfsync always \
        --save '' --dir "$dir" --daemonize no --logfile "$LOGS/redis-$1.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for ((i = 0; i < 100; i++)); do
        [ "$(redis-cli -p "$R_PORT" ping 2>/dev/null)" = PONG ] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || { cat "$LOGS/redis-$1.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "redis-server did not answer PING" >&2
    exit 1
}

# --- measurements ---------------------------------------------------------------------------------
declare -A VALS # NAME -> space-separated values, one per run
add() { VALS[$1]="${VALS[$1]:-} $2"; }

# redis_bench NAME PORT RUN: the issue's redis-benchmark; adds NAME_{set,get}_{rps,p50,p99}.
redis_bench() {
    local name=$1 port=$2 run=$3 out=$LOGS/rb-$1-$3.csv perf_pid=
    echo "    redis-benchmark against $name"
    if [ "$name" = writer ] && [ "$run" = 1 ] && [ "$PERF_SECONDS" != 0 ]; then
        # Starts after a second of SET load; the SET phase lasts longer than that at any rate
        # measured here.
        (sleep 1 && exec perf record -g -p "$WRITER_PID" -o "$LOGS/perf-set.data" \
            -- sleep "$PERF_SECONDS") >"$LOGS/perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    local cpu0=
    [ "$name" = writer ] && scrape "$LOGS/metrics-before" && cpu0=$(cpu_ticks "$WRITER_PID")
    left
    if ! timeout "$LEFT" redis-benchmark -h 127.0.0.1 -p "$port" "${RB_OPTS[@]}" -n "$RB_N" \
        --csv >"$out" 2>"$LOGS/rb-$name-$run.err"; then
        echo "redis-benchmark against $name failed" >&2
        tail -5 "$out" "$LOGS/rb-$name-$run.err" >&2
        exit 1
    fi
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        forget_pid "$perf_pid"
    fi
    if grep -qi 'err' "$out" "$LOGS/rb-$name-$run.err"; then
        echo "redis-benchmark against $name saw errors:" >&2
        grep -i 'err' "$out" "$LOGS/rb-$name-$run.err" | head -5 >&2
        exit 1
    fi
    if [ "$name" = writer ]; then
        # CPU of the writer per request of the load (SET and GET: the two tests of RB_OPTS), in
        # microseconds; not in a run that perf samples, whose overhead the writer would carry.
        if [ -z "$perf_pid" ]; then
            add writer_cpu_us "$(awk -v a="$cpu0" -v b="$(cpu_ticks "$WRITER_PID")" -v n="$RB_N" \
                -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) * 1e6 / hz / (2 * n) }')"
        fi
        scrape "$LOGS/metrics-after" &&
            stages set_stage "$LOGS/metrics-before" "$LOGS/metrics-after"
    fi
    local t rps p50 p99
    while IFS=, read -r t rps _ _ p50 _ p99 _; do
        t=${t//\"/}
        case $t in SET | GET) ;; *) continue ;; esac
        t=${t,,}
        add "${name}_${t}_rps" "${rps//\"/}"
        add "${name}_${t}_p50" "${p50//\"/}"
        add "${name}_${t}_p99" "${p99//\"/}"
    done <"$out"
}

# CPU time (user + system) of a process so far, in clock ticks (/proc/PID/stat).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Where the writer's writes spent their time (docs/raft.md "Write latency by stage"): /metrics
# before and after a load, as mean milliseconds per write of each stage.
STAGES="queue commit apply deliver"
scrape() { # FILE
    curl -sf "http://127.0.0.1:$W_HTTP/metrics" >"$1" || : >"$1"
}
stages() { # PREFIX BEFORE AFTER: adds PREFIX_<stage> for each stage (ms per write)
    local st v
    for st in $STAGES; do
        v=$(awk -v st="$st" 'FNR == 1 { f++ }
            /^unison_write_requests_staged_total / { n[f] = $2 }
            $0 ~ "^unison_write_stage_seconds_total\\{stage=\"" st "\"\\}" { t[f] = $2 }
            END { if (n[2] > n[1]) printf "%.3f", (t[2] - t[1]) * 1000 / (n[2] - n[1]) }' "$2" "$3")
        [ -n "$v" ] && add "${1}_$st" "$v"
    done
    # Wall time during which writes waited for the flush to the B+tree (admission control).
    v=$(awk 'FNR == 1 { f++ } /^unison_write_admission_held_seconds_total / { t[f] = $2 }
        END { if (f == 2 && (2 in t)) printf "%.2f", t[2] - t[1] }' "$2" "$3")
    [ -n "$v" ] && add "${1}_held" "$v"
    rm -f "$2" "$3"
}

# The writer must hold what redis-benchmark wrote: the keys of the last run, counted with SCAN.
check_keys() { # PORT NAME
    local n
    left
    n=$(timeout "$LEFT" redis-cli -p "$1" --scan --pattern 'key:*' | wc -l)
    echo "    $2 holds $n keys after the run"
    add "${2}_keys" "$n"
    if [ "$n" -lt 1000 ]; then
        echo "$2 holds only $n keys after redis-benchmark" >&2
        exit 1
    fi
}

# http_bench RUN: h2load PUTs of 1 KiB values (JSON, base64) to distinct keys over h2c.
http_bench() {
    local run=$1 p per=$((H2_N / H2_PROCS)) pids=() dir=$DATA/h2load-$1
    mkdir -p "$dir"
    echo "    h2load: $H2_N PUTs, $H2_PROCS processes x 1 connection x $H2_STREAMS streams"
    head -c 1024 /dev/urandom | base64 -w0 | awk '{ printf "{\"value\":\"%s\"}", $0 }' \
        >"$dir/body.json"
    for ((p = 0; p < H2_PROCS; p++)); do
        awk -v port="$W_HTTP" -v run="$run" -v p="$p" -v n="$per" 'BEGIN {
            for (i = 0; i < n; i++)
                printf "http://127.0.0.1:%s/api/v1/default/kv/bench-%s-%s-%08d\n", port, run, p, i }' \
            >"$dir/uris-$p.txt"
    done
    scrape "$LOGS/metrics-before"
    left
    for ((p = 0; p < H2_PROCS; p++)); do
        timeout "$LEFT" h2load -c 1 -m "$H2_STREAMS" -n "$per" -i "$dir/uris-$p.txt" \
            -d "$dir/body.json" -H ':method: PUT' -H 'content-type: application/json' \
            --log-file "$dir/req-$p.tsv" >"$LOGS/h2load-$run-$p.log" 2>&1 &
        pids+=($!)
        PIDS+=($!)
    done
    local failed=0
    for p in "${pids[@]}"; do
        wait "$p" || failed=1
        forget_pid "$p"
    done
    if [ $failed = 1 ] || ! grep -q "status codes: $per 2xx" "$LOGS"/h2load-"$run"-*.log; then
        echo "h2load failed or got non-2xx answers:" >&2
        grep -h -E 'requests:|status codes:' "$LOGS"/h2load-"$run"-*.log >&2
        exit 1
    fi
    scrape "$LOGS/metrics-after"
    stages put_stage "$LOGS/metrics-before" "$LOGS/metrics-after"
    local ok
    ok=$(grep -h 'status codes:' "$LOGS"/h2load-"$run"-*.log | awk '{ s += $3 } END { print s }')
    [ "$ok" = "$H2_N" ] || { echo "h2load: $ok of $H2_N PUTs answered 2xx" >&2; exit 1; }
    # Rate over the wall time from the first request's start to the last response's end; latency
    # percentiles of every request (columns: start us since the epoch, status, duration us).
    # (%.0f, not %d: mawk's %d is 32 bits.)
    cat "$dir"/req-*.tsv | cut -f3 >"$dir/lat.txt"
    add http_put_rps "$(cat "$dir"/req-*.tsv | awk -F'\t' -v n="$H2_N" 'NR == 1 { lo = $1 }
        { if ($1 < lo) lo = $1; if ($1 + $3 > hi) hi = $1 + $3 }
        END { printf "%.1f", n / ((hi - lo) / 1e6) }')"
    sort -n "$dir/lat.txt" >"$dir/lat.sorted"
    add http_put_p50 "$(awk -v n="$H2_N" 'NR == int(n * 0.50) { printf "%.3f", $1 / 1000; exit }' \
        "$dir/lat.sorted")"
    add http_put_p99 "$(awk -v n="$H2_N" 'NR == int(n * 0.99) { printf "%.3f", $1 / 1000; exit }' \
        "$dir/lat.sorted")"
    # Spot check: the last key of each list reads back.
    for ((p = 0; p < H2_PROCS; p++)); do
        curl -sf "$(tail -1 "$dir/uris-$p.txt")" | grep -q '"found":true' ||
            { echo "PUT key not found after h2load: $(tail -1 "$dir/uris-$p.txt")" >&2; exit 1; }
    done
    rm -rf "$dir"
}

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((rep = 1; rep <= RUNS; rep++)); do
    echo "=== run $rep/$RUNS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    start_writer "$rep"
    if wanted resp; then
        start_redis "$rep"
        if [ $((rep % 2)) = 1 ]; then
            redis_bench redis "$R_PORT" "$rep"
            redis_bench writer "$W_RESP" "$rep"
        else
            redis_bench writer "$W_RESP" "$rep"
            redis_bench redis "$R_PORT" "$rep"
        fi
        check_keys "$W_RESP" writer
        check_keys "$R_PORT" redis
        stop_pid "$REDIS_PID"
        forget_pid "$REDIS_PID"
        # Ratios within the run, then their median over runs.
        for t in set get; do
            w=$(echo "${VALS[writer_${t}_rps]}" | awk '{ print $NF }')
            r=$(echo "${VALS[redis_${t}_rps]}" | awk '{ print $NF }')
            add "ratio_$t" "$(awk -v w="$w" -v r="$r" 'BEGIN { printf "%.3f", w / r }')"
        done
    fi
    if wanted http; then
        http_bench "$rep"
    fi
    stop_pid "$WRITER_PID"
    forget_pid "$WRITER_PID"
    rm -rf "$DATA/writer-$rep" "$DATA/redis-$rep"
done
ELAPSED=$(($(date +%s) - START))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ---------------------------------------------------------------------------------------
median() { # values... -> the median (mean of the middle two for an even count)
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2];
              else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() {
    # shellcheck disable=SC2086
    median ${VALS[$1]:-}
}
fmt() { # number -> integer with thousands separators, or 2 decimals below 100
    awk -v v="$1" 'BEGIN { if (v == "") { print "-"; exit }
        if (v < 100) { printf "%.2f\n", v; exit }
        s = sprintf("%d", v + 0.5); out = "";
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        print s out }'
}
runs_of() { # NAME -> "a/b/c"
    # shellcheck disable=SC2086
    echo ${VALS[$1]:-} | tr ' ' '\n' | while read -r v; do fmt "$v"; done | paste -sd/ -
}
verdict() { # VALUE GOAL [TARGET]
    if [ -z "$1" ]; then
        echo "not run"
    elif awk -v v="$1" -v g="$2" 'BEGIN { exit !(v >= g) }'; then
        if [ -n "${3:-}" ] && awk -v v="$1" -v t="$3" 'BEGIN { exit !(v < t) }'; then
            echo "PASS (target $3x: MISS)"
        elif [ -n "${3:-}" ]; then
            echo "PASS (target $3x: PASS)"
        else
            echo PASS
        fi
    else
        echo MISS
    fi
}

stage_row() { # PREFIX -> the median of each stage, "a / b / c / d"
    local st out=
    for st in $STAGES; do
        out="$out${out:+ / }$(fmt "$(med "${1}_$st")")"
    done
    echo "$out"
}

ROWS=()
if wanted resp; then
    for t in set get; do
        T=${t^^}
        if [ $t = set ]; then goal=$SET_GOAL target=$SET_TARGET; else goal=$GET_GOAL target=; fi
        ROWS+=("$T req/s|$(fmt "$(med writer_${t}_rps)") ($(runs_of writer_${t}_rps))|$(fmt \
"$(med redis_${t}_rps)") ($(runs_of redis_${t}_rps))|$(fmt "$(med ratio_$t)")x ($(runs_of ratio_$t))|\
>= ${goal}x${target:+, target ${target}x}|$(verdict "$(med ratio_$t)" "$goal" "$target")")
        ROWS+=("$T p50 ms|$(fmt "$(med writer_${t}_p50)")|$(fmt "$(med redis_${t}_p50)")||-|")
        ROWS+=("$T p99 ms|$(fmt "$(med writer_${t}_p99)") ($(runs_of writer_${t}_p99))|$(fmt \
"$(med redis_${t}_p99)") ($(runs_of redis_${t}_p99))||reported|")
    done
    ROWS+=("SET write stages, mean ms ($(echo $STAGES | tr ' ' /))|$(stage_row set_stage)|||-|")
    ROWS+=("SET + GET load: seconds writes waited for the flush (admission control)|$(fmt \
"$(med set_stage_held)") ($(runs_of set_stage_held))|||-|")
    ROWS+=("writer CPU per request, us (SET + GET load, user + system)|$(fmt \
"$(med writer_cpu_us)") ($(runs_of writer_cpu_us))|||-|")
fi
if wanted http; then
    ROWS+=("HTTP PUT req/s (h2c, 1 KiB, distinct keys)|$(fmt "$(med http_put_rps)") \
($(runs_of http_put_rps))|||>= $(fmt $HTTP_GOAL)|$(verdict "$(med http_put_rps)" $HTTP_GOAL)")
    ROWS+=("HTTP PUT p50 / p99 ms|$(fmt "$(med http_put_p50)") / $(fmt "$(med http_put_p99)")|||-|")
    ROWS+=("PUT write stages, mean ms ($(echo $STAGES | tr ' ' /))|$(stage_row put_stage)|||-|")
fi

HEADER="| figure | unison-writer median (runs) | redis-server median (runs) | ratio | goal | result |"
SEP="|---|---|---|---|---|---|"
if [ -n "$BUILT_AT" ]; then
    WHAT="unison-writer built from $BUILT_AT"
else
    WHAT="unison-writer binary $WRITER"
fi
SUMMARY="$RUNS run(s), $(date -u '+%Y-%m-%d %H:%M UTC'), ${ELAPSED} s, load average $LOAD_START \
before and $LOAD_END after; $WHAT"
echo
echo "$SUMMARY"
echo "redis-benchmark ${RB_OPTS[*]} -n $RB_N (both servers)"
wanted http && echo "h2load: $H2_PROCS x (h2load -c 1 -m $H2_STREAMS -n $((H2_N / H2_PROCS))" \
    "-i <distinct URIs> -d <1 KiB value as JSON> -H ':method: PUT')"
echo "$HEADER"
echo "$SEP"
for r in "${ROWS[@]}"; do
    echo "| ${r//|/ | } |"
done
echo "logs: $LOGS"
if [ -n "$MARKDOWN" ]; then
    {
        echo "$SUMMARY."
        echo
        echo "$HEADER"
        echo "$SEP"
        for r in "${ROWS[@]}"; do
            echo "| ${r//|/ | } |"
        done
    } >"$MARKDOWN"
    echo "markdown: $MARKDOWN"
fi
