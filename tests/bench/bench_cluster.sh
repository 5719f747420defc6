#!/usr/bin/env bash
# Cluster benchmark (issue 5, docs/benchmarks.md "Issue 5: 3-writer cluster vs etcd"): three
# unison-writer processes against three etcd 3.4 members, both on loopback, both durable (a write
# is answered after a majority fsynced it), 1 KiB values, the same h2load options for both; then
# our write latency at fixed rates, and leader SIGKILL -> first acknowledged write. Prints one
# table with PASS/MISS against the goals.
#
#   tests/bench/bench_cluster.sh                  every part, about 5-6 minutes
#   tests/bench/bench_cluster.sh --quick          3 s loads, 3 failover trials: checks the harness
#   tests/bench/bench_cluster.sh --seconds 6      seconds per load (default 6)
#   tests/bench/bench_cluster.sh --runs 3         runs of each judged compare load per system
#                                                 (default 3; the ratio is that of the medians)
#   tests/bench/bench_cluster.sh --trials 10      failover trials per setting (default 10)
#   tests/bench/bench_cluster.sh --only "compare rates failover"   a subset of the three parts
#                                                 (and "clients", not run by default: the 256
#                                                 connections from 1 and from 16 h2load processes;
#                                                 "c1", not run by default: only compare's
#                                                 concurrency-1 pair, etcd's load once and ours
#                                                 --c1-runs times, 3 by default)
#   tests/bench/bench_cluster.sh --short-election MS  the second failover setting's election
#                                                 timeout (default 300, heartbeat a tenth; 0: skip)
#   tests/bench/bench_cluster.sh --writer BIN     benchmark this unison-writer (no build)
#   tests/bench/bench_cluster.sh --set S.K=V      pass --set S.K=V to every writer (repeatable)
#   tests/bench/bench_cluster.sh --markdown FILE  also write the results table as markdown
#
# compare   h2load over HTTP/1.1 (etcd's JSON gateway serves HTTP/1.1 only; h2c on its client port
#           reaches gRPC), the same options for both, against each system's leader. Ours: PUT
#           /api/v1/default/kv/{key}, keys from a list per h2load process; etcd: POST
#           /v3/kv/put, one key per h2load process (the key is in the body, which h2load sends
#           unchanged). h2load replays its URI list from the start in every connection, so the
#           connections of one process write the same keys.
#             concurrency 1:   1 process, -c 1 -m 1 (ours: a new key per request)
#             concurrency 256: 16 processes x -c 16 -m 1 (judged; each of our keys written 16
#                              times), and 256 processes x -c 1 -m 1 (a new key per request for
#                              ours, but 256 client processes on the machine's cores: reported)
#           The two judged loads run --runs times per system, ours and etcd alternating (all the
#           concurrency-1 pairs, then the concurrency-256 ones), and are judged on the ratio of
#           the median rates: one run's ratio moves by 10-20 % with what else the machine does.
#           Then our h2c figures: -c 1 -m 1, and 4 processes of -c 1 -m 64 (256 outstanding).
# rates     our p50/p99 at 1,000 and 10,000 writes/s (h2c, 4 processes of -c 1 -m 100 --rps R/4)
#           and at the maximum rate (the unpaced h2c run above).
# failover  a client writes continuously to all three writers; the leader is SIGKILLed; from then
#           on a new write goes to each survivor every 20 ms (a follower forwards it to the leader
#           once there is one); the figure is the time from the kill to the first 2xx answer to a
#           write sent after it. The killed writer is restarted and caught up before the next
#           trial. Default election timeout (1000 ms, judged), then --short-election (reported).
#
# Data lives in build-bench/cluster-bench-data (the real disk) and is removed at the end; logs stay
# in build-bench/bench-logs/cluster-<time>/. Every process started here runs on 127.0.0.1 and is
# stopped by its PID on exit; the whole run is bounded by UD_BENCH_BUDGET seconds (default 600).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=$ROOT/build-bench

QUICK=${UD_BENCH_QUICK:-0}
BUDGET=${UD_BENCH_BUDGET:-600}
SECS=
TRIALS=
ONLY="compare rates failover"
C1_RUNS=3
RUNS=3
SHORT_ELECTION=300
WRITER=
WRITER_SETS=()
MARKDOWN=
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --seconds) SECS=$2; shift ;;
    --trials) TRIALS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --c1-runs) C1_RUNS=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --short-election) SHORT_ELECTION=$2; shift ;;
    --writer) WRITER=$2; shift ;;
    --set) WRITER_SETS+=(--set "$2"); shift ;;
    --markdown) MARKDOWN=$2; shift ;;
    -h | --help) sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    SECS=${SECS:-3} TRIALS=${TRIALS:-3}
else
    SECS=${SECS:-6} TRIALS=${TRIALS:-10}
fi

# Goals (issue 5).
C1_GOAL=3 C256_GOAL=5 C256_TARGET=10 FAILOVER_GOAL_MS=2000
# Rates of the paced loads, writes/s.
PACED="1000 10000"

# shellcheck source=tests/bench/lib.sh
. "$ROOT/tests/bench/lib.sh"

for tool in etcd etcdctl h2load curl python3; do
    command -v $tool >/dev/null || {
        echo "missing: $tool (apt-get install etcd-server etcd-client nghttp2-client curl python3)" >&2
        exit 1
    }
done

BUILT_AT=
if [ -z "$WRITER" ]; then
    bench_build writer/unison-writer
    WRITER=$BUILD/writer/unison-writer
fi
[ -x "$WRITER" ] || { echo "not executable: $WRITER" >&2; exit 1; }
TOOL=$ROOT/tests/bench/cluster_tool.py

bench_workspace cluster
# 256 h2load processes, their connections, and the servers' ends of them.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_budget

# One 1 KiB random value, the same bytes for both systems (base64 in both JSON bodies).
VALUE_B64=$(head -c 1024 /dev/urandom | base64 -w0)

# --- our cluster ----------------------------------------------------------------------------------
# U_HTTP[i], U_RAFT[i]: fixed loopback ports (peers must know each other's); U_PID[i]; U_CONF[i].
declare -a U_HTTP U_RAFT U_PID U_CONF
U_SET=

# start_ours SET ELECTION_MS: writes the three configurations and starts the writers.
start_ours() {
    local set=$1 election=$2 i peers ports
    U_SET=$set
    read -r -a ports <<<"$(python3 "$TOOL" free-ports 6)"
    U_HTTP=("${ports[@]:0:3}")
    U_RAFT=("${ports[@]:3:3}")
    peers=
    for i in 0 1 2; do
        peers="$peers${peers:+, }\"$((i + 1))@127.0.0.1:${U_RAFT[$i]},http=127.0.0.1:${U_HTTP[$i]}\""
    done
    for i in 0 1 2; do
        mkdir -p "$DATA/$set/n$((i + 1))"
        U_CONF[i]=$DATA/$set/n$((i + 1)).toml
        cat >"${U_CONF[$i]}" <<EOF
[raft]
node_id = $((i + 1))
cluster_id = "bench"
peers = [$peers]
election_timeout_ms = $election
heartbeat_timeout_ms = $((election / 10))
EOF
        start_node "$i"
    done
    for i in 0 1 2; do
        wait_node_ports "$i"
    done
    wait_settled
    wait_writer_ready "$(leader_http)"
    echo "    unison-writer cluster ($set, election timeout $election ms): pids ${U_PID[*]}," \
        "HTTP ports ${U_HTTP[*]}, leader on port $(leader_http)"
}

start_node() { # INDEX
    local i=$1 dir=$DATA/$U_SET/n$(($1 + 1))
    rm -f "$dir/ports.json"
    "$WRITER" --config "${U_CONF[$i]}" -d "$dir/data" --http "127.0.0.1:${U_HTTP[$i]}" \
        --resp off --raft "127.0.0.1:${U_RAFT[$i]}" --ports-file "$dir/ports.json" \
        --log-level warn "${WRITER_SETS[@]+"${WRITER_SETS[@]}"}" >>"$LOGS/$U_SET-n$((i + 1)).log" 2>&1 &
    U_PID[i]=$!
    PIDS+=("${U_PID[$i]}")
}

wait_node_ports() { # INDEX
    local dir=$DATA/$U_SET/n$(($1 + 1))
    wait_ports "${U_PID[$1]}" "$dir/ports.json" "$LOGS/$U_SET-n$(($1 + 1)).log"
}

# leader_index: the index (0-2) of the writer that says it leads, or nothing.
leader_index() {
    local i
    for i in 0 1 2; do
        if curl -sf -m 2 "http://127.0.0.1:${U_HTTP[$i]}/status/leader" 2>/dev/null |
            grep -q '"isLeader":true'; then
            echo "$i"
            return 0
        fi
    done
}
leader_http() { echo "${U_HTTP[$(leader_index)]}"; }

# wait_settled: one leader, every writer reachable and applied up to the leader's last index
# (bounded: 30 s).
wait_settled() {
    local i l
    for ((i = 0; i < 300; i++)); do
        l=$(leader_index)
        if [ -n "$l" ] && curl -sf -m 3 "http://127.0.0.1:${U_HTTP[$l]}/status/cluster" 2>/dev/null |
            python3 "$TOOL" settled >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "the writers did not settle (one leader, all caught up) within 30 s" >&2
    for i in 0 1 2; do tail -5 "$LOGS/$U_SET-n$((i + 1)).log" >&2; done
    exit 1
}

stop_ours() {
    local i
    for i in 0 1 2; do
        stop_pid "${U_PID[$i]}"
        forget_pid "${U_PID[$i]}"
    done
}

# applied_lsn PORT: the default namespace's last applied LSN on that writer.
applied_lsn() {
    curl -sf -m 3 "http://127.0.0.1:$1/status/node" | python3 "$TOOL" json-get namespaces.default
}

# --- etcd -----------------------------------------------------------------------------------------
declare -a E_CLIENT E_PEER E_PID
E_ENDPOINTS=

start_etcd() {
    local i ports cluster=
    read -r -a ports <<<"$(python3 "$TOOL" free-ports 6)"
    E_CLIENT=("${ports[@]:0:3}")
    E_PEER=("${ports[@]:3:3}")
    for i in 0 1 2; do
        cluster="$cluster${cluster:+,}e$((i + 1))=http://127.0.0.1:${E_PEER[$i]}"
    done
    E_ENDPOINTS=127.0.0.1:${E_CLIENT[0]},127.0.0.1:${E_CLIENT[1]},127.0.0.1:${E_CLIENT[2]}
    for i in 0 1 2; do
        # Defaults otherwise: every raft batch fsynced (WAL) before it counts, election 1000 ms,
        # heartbeat 100 ms.
        etcd --name "e$((i + 1))" --data-dir "$DATA/etcd/e$((i + 1))" \
            --listen-client-urls "http://127.0.0.1:${E_CLIENT[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${E_CLIENT[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${E_PEER[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${E_PEER[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-token "bench-$$" \
            --initial-cluster-state new --logger zap --log-level warn \
            >"$LOGS/etcd-e$((i + 1)).log" 2>&1 &
        E_PID[i]=$!
        PIDS+=("${E_PID[$i]}")
    done
    for ((i = 0; i < 300; i++)); do
        etcd_leader >/dev/null 2>&1 && break
        sleep 0.1
    done
    etcd_leader >/dev/null || { echo "etcd elected no leader in 30 s" >&2; exit 1; }
    echo "    etcd $(etcd --version | sed -n 's/^etcd Version: //p'): pids ${E_PID[*]}," \
        "client ports ${E_CLIENT[*]}, leader $(etcd_leader)"
}

etcd_status() { ETCDCTL_API=3 etcdctl --endpoints="$E_ENDPOINTS" --command-timeout=3s \
    endpoint status -w json 2>/dev/null; }
etcd_leader() { etcd_status | python3 "$TOOL" etcd-leader; }
etcd_revision() { etcd_status | python3 "$TOOL" etcd-revision; }

stop_etcd() {
    local i
    kill -TERM "${E_PID[@]}" 2>/dev/null || true
    for i in 0 1 2; do
        stop_pid "${E_PID[$i]}"
        forget_pid "${E_PID[$i]}"
    done
}

# --- loads ----------------------------------------------------------------------------------------
declare -A VAL # NAME -> value

# load NAME SYSTEM PROTO PROCS CONNS STREAMS [RPS_PER_CONNECTION]: PROCS h2load processes of CONNS
# connections each, STREAMS requests outstanding per connection (HTTP/1.1: 1), for SECS seconds,
# against the leader of SYSTEM (ours or etcd); PROTO h1 or h2c. Sets VAL[NAME_rate], _p50_ms,
# _p99_ms, _ok, _errors_total, _note and, for ours, _stages.
load() {
    local name=$1 system=$2 proto=$3 procs=$4 conns=$5 streams=$6 rps=${7:-} p dir=$DATA/load-$1
    local opts=()
    local pids=() url method body len before after target kv port='' go cpu_before=
    mkdir -p "$dir"
    [ "$proto" = h1 ] && opts+=(--h1)
    [ -n "$rps" ] && opts+=(--rps "$rps")
    # Enough distinct keys for the fastest rate one connection has shown here (5,000 writes/s per
    # outstanding request, at most 80,000 writes/s in all), so no key repeats in a run.
    # (The connections of one process share its list: with CONNS > 1 each key is written CONNS
    # times.)
    len=$(awk -v s="$SECS" -v p="$procs" -v m="$streams" 'BEGIN {
        r = 80000 / p; if (r > 5000 * m) r = 5000 * m; printf "%d", r * s + 1000 }')
    if [ "$system" = ours ]; then
        port=$(leader_http)
        printf '{"value":"%s"}' "$VALUE_B64" >"$dir/body-0.json"
        for ((p = 0; p < procs; p++)); do
            awk -v port="$port" -v name="$name" -v p="$p" -v n="$len" 'BEGIN {
                for (i = 0; i < n; i++)
                    printf "http://127.0.0.1:%s/api/v1/default/kv/%s-%s-%08d\n", port, name, p, i }' \
                >"$dir/uris-$p.txt"
        done
        method=PUT
        before=$(applied_lsn "$port")
        scrape "$port" "$dir/metrics-before"
        cpu_before=$(writers_cpu)
    else
        url="http://$(etcd_leader)/v3/kv/put"
        for ((p = 0; p < procs; p++)); do
            printf '{"key":"%s","value":"%s"}' "$(printf '%s-%s' "$name" "$p" | base64 -w0)" \
                "$VALUE_B64" >"$dir/body-$p.json"
        done
        method=POST
        before=$(etcd_revision)
    fi
    echo "    $name: $system, $procs x (h2load ${opts[*]} -c $conns -m $streams -D $SECS)" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    left
    # The processes are forked first and wait on a FIFO; opening its write end releases them
    # together, so that their runs overlap for as much of SECS as the exec of h2load allows.
    mkfifo "$dir/go"
    for ((p = 0; p < procs; p++)); do
        if [ "$system" = ours ]; then
            target=(-i "$dir/uris-$p.txt")
            body=$dir/body-0.json
        else
            target=("$url")
            body=$dir/body-$p.json
        fi
        (
            : <"$dir/go"
            exec timeout "$((SECS + 30))" h2load "${opts[@]}" -c "$conns" -m "$streams" -D "$SECS" \
                -d "$body" -H ":method: $method" -H 'content-type: application/json' \
                --log-file "$dir/req-$p.tsv" "${target[@]}" >"$dir/h2load-$p.log" 2>&1
        ) &
        pids+=($!)
        PIDS+=($!)
    done
    exec {go}>"$dir/go"
    local failed=0
    for p in "${pids[@]}"; do
        wait "$p" || failed=1
        forget_pid "$p"
    done
    exec {go}>&-
    if [ $failed = 1 ]; then
        echo "h2load failed in $name:" >&2
        tail -3 "$dir"/h2load-*.log | head -20 >&2
        exit 1
    fi
    cp "$dir/h2load-0.log" "$LOGS/h2load-$name-0.log"
    local out k v note=
    out=$(python3 "$TOOL" stats "$dir"/req-*.tsv) || true
    echo "$out" >"$LOGS/stats-$name.txt"
    case $out in
    rate=*)
        for kv in $out; do
            k=${kv%%=*} v=${kv#*=}
            VAL[${name}_$k]=$v
        done
        ;;
    *)
        # No figures (say, processes that never ran together on an overloaded machine): the
        # table shows the reason instead of numbers, and the rest of the run goes on.
        echo "      $name: no figures: ${out#error=}" >&2
        VAL[${name}_note]="no figures: ${out#error=}"
        rm -rf "$dir"
        return 0
        ;;
    esac
    # The writes happened: the leader's LSN (ours) or etcd's revision grew by at least the number
    # of 2xx answers.
    if [ "$system" = ours ]; then
        after=$(applied_lsn "$port")
        VAL[${name}_cpu]=$(cpu_per_write "$cpu_before" "$(writers_cpu)" "${VAL[${name}_ok]}" \
            "$(leader_index)")
        scrape "$port" "$dir/metrics-after"
        VAL[${name}_stages]=$(stages "$dir/metrics-before" "$dir/metrics-after")
        [ "${VAL[${name}_max_per_proc]}" -gt "$len" ] && note="keys repeated after $len"
        [ "$(leader_http)" != "$port" ] && note="${note:+$note; }the leader changed during the load"
    else
        after=$(etcd_revision)
    fi
    VAL[${name}_applied]=$((after - before))
    if [ $((after - before)) -lt "${VAL[${name}_ok]}" ]; then
        note="${note:+$note; }only $((after - before)) writes applied for ${VAL[${name}_ok]} answered 2xx"
    fi
    [ "${VAL[${name}_errors_total]}" != 0 ] && note="${note:+$note; }${VAL[${name}_errors_total]} non-2xx"
    VAL[${name}_note]=$note
    local cpu=${VAL[${name}_cpu]:-}
    [ -n "$cpu" ] && cpu="; CPU us per write $cpu"
    echo "      $(fmt "${VAL[${name}_rate]}") writes/s, p50 ${VAL[${name}_p50_ms]} ms," \
        "p99 ${VAL[${name}_p99_ms]} ms (${VAL[${name}_window_s]} s window, ${VAL[${name}_ok]} ok," \
        "${VAL[${name}_errors_total]} errors; applied +$((after - before))$cpu)${note:+: $note}"
    rm -rf "$dir"
}

# CPU time (user + system) of each writer, from /proc/PID/stat, in clock ticks.
writers_cpu() {
    local i
    for i in 0 1 2; do
        # Fields 14 and 15 after the command name, which may hold spaces, in parentheses.
        sed 's/.*) //' "/proc/${U_PID[$i]}/stat" 2>/dev/null | awk '{ printf "%d ", $12 + $13 }' ||
            printf '0 '
    done
}

# cpu_per_write BEFORE AFTER WRITES LEADER -> "leader L / followers F1, F2" (us of CPU per write).
cpu_per_write() {
    [ "$3" -gt 0 ] || return 0
    awk -v b="$1" -v a="$2" -v n="$3" -v l="$4" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(b, x, " "); split(a, y, " "); f = ""
        for (i = 1; i <= 3; i++) {
            us = (y[i] - x[i]) * 1e6 / hz / n
            if (i - 1 == l) lead = sprintf("%.1f", us)
            else f = f (f == "" ? "" : ", ") sprintf("%.1f", us)
        }
        printf "leader %s / followers %s", lead, f }'
}

# Where our writes spent their time (docs/raft.md "Write latency by stage"): the leader's /metrics
# before and after a load, as mean milliseconds per write of each stage.
STAGES="queue commit apply deliver"
scrape() { # PORT FILE
    curl -sf -m 3 "http://127.0.0.1:$1/metrics" >"$2" || : >"$2"
}
stages() { # BEFORE AFTER -> "q / c / a / d" (ms per write)
    local st v out=
    for st in $STAGES; do
        v=$(awk -v st="$st" 'FNR == 1 { f++ }
            /^unison_write_requests_staged_total / { n[f] = $2 }
            $0 ~ "^unison_write_stage_seconds_total\\{stage=\"" st "\"\\}" { t[f] = $2 }
            END { if (n[2] > n[1]) printf "%.2f", (t[2] - t[1]) * 1000 / (n[2] - n[1]); else print "-" }' \
            "$1" "$2")
        out="$out${out:+ / }$v"
    done
    echo "$out"
}

fmt() { # number -> integer with thousands separators, or 2 decimals below 100
    awk -v v="$1" 'BEGIN { if (v == "") { print "-"; exit }
        if (v < 100) { printf "%.2f\n", v; exit }
        s = sprintf("%d", v + 0.5); out = "";
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        print s out }'
}

# --- failover -------------------------------------------------------------------------------------
# failover_trials NAME ELECTION_MS: a fresh cluster, TRIALS kills of its leader; VAL[NAME_ms] holds
# every trial's figure (ms, space-separated).
failover_trials() {
    local name=$1 election=$2 t l others out ms
    echo "=== failover, election timeout $election ms: $TRIALS trials" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    start_ours "$name" "$election"
    VAL[${name}_ms]=
    for ((t = 1; t <= TRIALS; t++)); do
        left
        wait_settled
        l=$(leader_index)
        others=
        for i in 0 1 2; do
            [ "$i" != "$l" ] && others="$others${others:+,}${U_HTTP[$i]}"
        done
        if ! out=$(timeout "$LEFT" python3 "$TOOL" failover --kill-pid "${U_PID[$l]}" \
            --leader "${U_HTTP[$l]}" --survivors "$others" --tag "$name-$t" --timeout 20); then
            echo "failover trial $t: $out" >&2
            exit 1
        fi
        wait "${U_PID[$l]}" 2>/dev/null || true
        forget_pid "${U_PID[$l]}"
        ms=$(sed -n 's/.*failover_ms=\([^ ]*\).*/\1/p' <<<"$out")
        VAL[${name}_ms]="${VAL[${name}_ms]} $ms"
        echo "    trial $t: killed n$((l + 1)) (pid ${U_PID[$l]}): $out"
        # The killed writer restarts with its data and catches up before the next trial.
        start_node "$l"
        wait_node_ports "$l"
    done
    wait_settled
    stop_ours
}

median() { # values... -> the median (mean of the middle two for an even count)
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2];
              else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
maximum() { printf '%s\n' "$@" | sort -g | tail -1; }

wanted() { [[ " $ONLY " == *" $1 "* ]]; }

# --- the run --------------------------------------------------------------------------------------
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if wanted compare || wanted rates || wanted clients || wanted c1; then
    echo "=== write rates (load average $LOAD_START)"
    start_ours cluster 1000
    if wanted compare || wanted clients || wanted c1; then
        start_etcd
    fi
    if wanted c1 && ! wanted compare; then
        # etcd once (its figure moves little from run to run), stopped, then ours several times
        # (its figure swings with what else the machine does).
        load etcd_c1 etcd h1 1 1 1
        stop_etcd
        for ((i = 1; i <= C1_RUNS; i++)); do
            load "ours_c1_$i" ours h1 1 1 1
        done
    fi
    if wanted compare; then
        # Pairs run back to back, so that both systems of a pair see the same machine; all the
        # concurrency-1 pairs first (a concurrency-256 load leaves our open raft segment filled
        # past its written-out part, docs/raft.md, which a concurrency-1 load would then pay).
        for c in 1 256; do
            for ((i = 1; i <= RUNS; i++)); do
                if [ $c = 1 ]; then
                    load "ours_c1_$i" ours h1 1 1 1
                    load "etcd_c1_$i" etcd h1 1 1 1
                else
                    load "ours_c256_$i" ours h1 16 16 1
                    load "etcd_c256_$i" etcd h1 16 16 1
                fi
            done
        done
        load ours_c256d ours h1 256 1 1
        load etcd_c256d etcd h1 256 1 1
    fi
    if wanted clients; then
        # The same 256 connections from one h2load process: the least client CPU, every key
        # written by all 256 connections.
        load ours_1x256 ours h1 1 256 1
        load etcd_1x256 etcd h1 1 256 1
    fi
    if wanted compare || wanted clients; then
        stop_etcd
    fi
    if wanted compare; then
        load ours_h2c_c1 ours h2c 1 1 1
    fi
    if wanted compare || wanted rates; then
        load ours_h2c_c256 ours h2c 4 1 64
    fi
    if wanted rates; then
        for r in $PACED; do
            load "ours_rps$r" ours h2c 4 1 100 $((r / 4))
        done
    fi
    stop_ours
fi
if wanted failover; then
    failover_trials failover_default 1000
    if [ "$SHORT_ELECTION" != 0 ]; then
        failover_trials failover_short "$SHORT_ELECTION"
    fi
fi
ELAPSED=$(($(date +%s) - START))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ---------------------------------------------------------------------------------------
ROWS=()
# Comparisons and ratios of figures that may be missing (a load without figures): false / "-".
ge() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-";
    else printf "%.2f", a / b }'; }
with_note() { # RESULT NAME...: appends the loads' notes (repeated keys, errors) to a result
    local r=$1 n
    shift
    for n in "$@"; do
        [ -n "${VAL[${n}_note]:-}" ] && r="$r ($n: ${VAL[${n}_note]})"
    done
    echo "$r"
}
lat() { echo "$(fmt "${VAL[${1}_p50_ms]:-}") / $(fmt "${VAL[${1}_p99_ms]:-}")"; }
rate() { fmt "${VAL[${1}_rate]:-}"; }

if wanted c1 && ! wanted compare; then
    for ((i = 1; i <= C1_RUNS; i++)); do
        o=ours_c1_$i e=etcd_c1
        rr=$(ratio "${VAL[${o}_rate]:-}" "${VAL[${e}_rate]:-}")
        ge "$rr" $C1_GOAL && res=PASS || res=MISS
        ROWS+=("durable writes/s, concurrency 1 (HTTP/1.1, 1 connection), run $i|\
$(fmt "${VAL[${o}_rate]:-}")|$(fmt "${VAL[${e}_rate]:-}")|${rr}x|>= ${C1_GOAL}x|$(with_note "$res" "$o" "$e")")
        ROWS+=("  p50 / p99 ms; our CPU per write, us|$(lat "$o"); ${VAL[${o}_cpu]:-}|$(lat "$e")||-|")
    done
fi
# median_of NAME_PREFIX FIELD: the median of VAL[NAME_PREFIX_i_FIELD] over the runs that have it.
median_of() {
    local i vals=()
    for ((i = 1; i <= RUNS; i++)); do
        [ -n "${VAL[${1}_${i}_$2]:-}" ] && vals+=("${VAL[${1}_${i}_$2]}")
    done
    [ ${#vals[@]} -gt 0 ] && median "${vals[@]}"
}
if wanted compare; then
    for c in 1 256; do
        # The judged figures: medians over the runs, kept as VAL[ours_cN_*] and VAL[etcd_cN_*].
        for sys in ours etcd; do
            for f in rate p50_ms p99_ms; do
                VAL[${sys}_c${c}_$f]=$(median_of "${sys}_c$c" $f)
            done
        done
        runs='' cpus='' stages='' notes=()
        for ((i = 1; i <= RUNS; i++)); do
            o=ours_c${c}_$i e=etcd_c${c}_$i
            runs="$runs${runs:+; }$(rate "$o") / $(rate "$e") ($(ratio "${VAL[${o}_rate]:-}" \
                "${VAL[${e}_rate]:-}")x)"
            cpus="$cpus${cpus:+; }${VAL[${o}_cpu]:-}"
            stages="$stages${stages:+; }${VAL[${o}_stages]:-}"
            notes+=("$o" "$e")
        done
        VAL[ours_c${c}_cpu]=$cpus VAL[ours_c${c}_stages]=$stages
        o=ours_c$c e=etcd_c$c
        rr=$(ratio "${VAL[${o}_rate]:-}" "${VAL[${e}_rate]:-}")
        if [ $c = 1 ]; then
            goal=">= ${C1_GOAL}x"
            ge "$rr" $C1_GOAL && res=PASS || res=MISS
            conc="1 connection"
        else
            goal=">= ${C256_GOAL}x, target ${C256_TARGET}x"
            if ! ge "$rr" $C256_GOAL; then res=MISS
            elif ge "$rr" $C256_TARGET; then res="PASS (target: PASS)"
            else res="PASS (target: MISS)"; fi
            conc="16 h2load processes x 16 connections"
        fi
        ROWS+=("durable writes/s, concurrency $c (HTTP/1.1, $conc), median of $RUNS runs|\
$(fmt "${VAL[${o}_rate]:-}")|$(fmt "${VAL[${e}_rate]:-}")|${rr}x|$goal|$(with_note "$res" "${notes[@]}")")
        ROWS+=("  the runs in order, ours / etcd writes/s (ratio)|$runs|||-|")
        lt "${VAL[${o}_p99_ms]:-}" "${VAL[${e}_p99_ms]:-}" && res=PASS || res=MISS
        ROWS+=("p50 / p99 ms, concurrency $c (medians of the runs)|$(lat "$o")|$(lat "$e")|\
p99: etcd / ours $(ratio "${VAL[${e}_p99_ms]:-}" "${VAL[${o}_p99_ms]:-}")x|ours lower|$res")
    done
    o=ours_c256d e=etcd_c256d
    ROWS+=("256 connections from 256 h2load processes (a new key per request for ours):\
 writes/s, p50 / p99 ms|$(fmt "${VAL[${o}_rate]:-}"), $(lat "$o")|$(fmt "${VAL[${e}_rate]:-}"), \
$(lat "$e")|$(ratio "${VAL[${o}_rate]:-}" "${VAL[${e}_rate]:-}")x|reported|$(with_note "" "$o" "$e")")
    for c in 1 256; do
        ROWS+=("our write stages at concurrency $c, mean ms (queue / commit / apply / deliver), \
each run|${VAL[ours_c${c}_stages]}|||-|")
        ROWS+=("our CPU per write at concurrency $c, us (user + system, /proc/PID/stat), each run|\
${VAL[ours_c${c}_cpu]:-}|||-|")
    done
    ROWS+=("ours over h2c, concurrency 1 (-c 1 -m 1): writes/s, p50 / p99 ms|\
$(fmt "${VAL[ours_h2c_c1_rate]:-}"), $(lat ours_h2c_c1)|-||reported|$(with_note "" ours_h2c_c1)")
fi
if wanted clients; then
    o=ours_1x256 e=etcd_1x256
    ROWS+=("256 connections from 1 h2load process (every key written by all of them):\
 writes/s, p50 / p99 ms|$(fmt "${VAL[${o}_rate]:-}"), $(lat "$o")|$(fmt "${VAL[${e}_rate]:-}"), \
$(lat "$e")|$(ratio "${VAL[${o}_rate]:-}" "${VAL[${e}_rate]:-}")x|reported|$(with_note "" "$o" "$e")")
fi
if wanted compare || wanted rates; then
    ROWS+=("ours over h2c at the maximum rate, 256 outstanding (4 x -c 1 -m 64): writes/s, p50 / p99 ms|\
$(fmt "${VAL[ours_h2c_c256_rate]:-}"), $(lat ours_h2c_c256)|-||reported|$(with_note "" ours_h2c_c256)")
fi
if wanted rates; then
    for r in $PACED; do
        n=ours_rps$r
        note=
        ge "${VAL[${n}_rate]:-}" "$(awk -v r="$r" 'BEGIN { print r * 0.95 }')" ||
            note="offered rate not reached"
        ROWS+=("ours at $(fmt "$r") writes/s (h2c, paced): achieved writes/s, p50 / p99 ms|\
$(fmt "${VAL[${n}_rate]:-}"), $(lat "$n")|-||reported|$(with_note "$note" "$n")")
    done
fi
if wanted failover; then
    # shellcheck disable=SC2086
    m=$(median ${VAL[failover_default_ms]}) mx=$(maximum ${VAL[failover_default_ms]})
    ge "$FAILOVER_GOAL_MS" "$m" && res=PASS || res=MISS
    ROWS+=("leader SIGKILL -> first acknowledged write, default election timeout 1000 ms:\
 median / max ms over $TRIALS trials|$(fmt "$m") / $(fmt "$mx")|-||median <= $FAILOVER_GOAL_MS ms|$res")
    ROWS+=("  the trials, ms|$(tr ' ' '\n' <<<"${VAL[failover_default_ms]}" |
        awk 'NF { printf "%s%d", n++ ? " / " : "", $1 + 0.5 }')|||-|")
    if [ "$SHORT_ELECTION" != 0 ]; then
        # shellcheck disable=SC2086
        m=$(median ${VAL[failover_short_ms]}) mx=$(maximum ${VAL[failover_short_ms]})
        ge "$FAILOVER_GOAL_MS" "$m" && res=PASS || res=MISS
        ROWS+=("the same, election timeout $SHORT_ELECTION ms (heartbeat $((SHORT_ELECTION / 10)) ms)\
|$(fmt "$m") / $(fmt "$mx")|-||reported|$res (not judged)")
        ROWS+=("  the trials, ms|$(tr ' ' '\n' <<<"${VAL[failover_short_ms]}" |
            awk 'NF { printf "%s%d", n++ ? " / " : "", $1 + 0.5 }')|||-|")
    fi
fi

HEADER="| figure | 3 unison-writers | etcd 3.4, 3 members | ratio | goal | result |"
SEP="|---|---|---|---|---|---|"
if [ -n "$BUILT_AT" ]; then
    WHAT="unison-writer built from $BUILT_AT"
else
    WHAT="unison-writer binary $WRITER"
fi
[ ${#WRITER_SETS[@]} -gt 0 ] && WHAT="$WHAT, writers with ${WRITER_SETS[*]}"
SUMMARY="$(date -u '+%Y-%m-%d %H:%M UTC'), ${SECS} s per load, $TRIALS failover trials, \
${ELAPSED} s, load average $LOAD_START before and $LOAD_END after; $WHAT"
echo
echo "$SUMMARY"
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
