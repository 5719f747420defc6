#!/usr/bin/env bash
# Runs the 3-writer raft cluster of deploy/n1.toml .. n3.toml on loopback, in the foreground:
# prints each writer's PID and endpoints and prefixes its log lines with its name. A writer that
# stops (killed, to watch a failover) is reported and the others go on; Ctrl-C or SIGTERM stops
# every writer by PID with SIGTERM and waits; the script ends when no writer is left.
#
#   deploy/local-cluster.sh                 binary from build-release/ (deploy/run-writer.sh
#                                           builds it) or build/, data in ./cluster-data
#   UNISON_WRITER=/path/unison-writer CLUSTER_DIR=/var/tmp/uc deploy/local-cluster.sh
set -uo pipefail
# wait -n -p (below) needs bash 5.1.
if [ "${BASH_VERSINFO[0]}" -lt 5 ] || { [ "${BASH_VERSINFO[0]}" -eq 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then
    echo "local-cluster: needs bash 5.1 or later (this is $BASH_VERSION)" >&2
    exit 2
fi

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${UNISON_WRITER:-}
if [ -z "$BIN" ]; then
    for c in "$HERE/../build-release/writer/unison-writer" "$HERE/../build/writer/unison-writer" \
        "$(command -v unison-writer || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then BIN=$c; break; fi
    done
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "local-cluster: no unison-writer binary; build it (deploy/run-writer.sh builds" \
        "build-release/) or set UNISON_WRITER" >&2
    exit 2
fi
DATA=${CLUSTER_DIR:-./cluster-data}
mkdir -p "$DATA"

left=() # the writers still running
stopping=0
stop_all() {
    [ "$stopping" = 1 ] && return
    stopping=1
    echo "local-cluster: stopping the writers" >&2
    local running=()
    for pid in "${left[@]}"; do # not those reaped earlier: their PIDs may be another's by now
        kill -TERM "$pid" 2>/dev/null && running+=("$pid")
    done
    for pid in "${running[@]}"; do
        wait "$pid" 2>/dev/null
        echo "local-cluster: writer $pid exited with status $?" >&2
    done
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

for n in 1 2 3; do
    rm -f "$DATA/n$n.ports.json"
    # setsid: a Ctrl-C on the terminal reaches this script only, which then sends one SIGTERM
    # (a writer that got both would take the second as "exit at once").
    setsid "$BIN" --config "$HERE/n$n.toml" --data-dir "$DATA/n$n" \
        --ports-file "$DATA/n$n.ports.json" > >(sed -u "s/^/[n$n] /") 2>&1 &
    left+=($!)
    echo "local-cluster: n$n pid $! (http 127.0.0.1:400$n, resp 127.0.0.1:638$n, raft 127.0.0.1:410$n)"
done

for n in 1 2 3; do
    for _ in $(seq 100); do
        [ -f "$DATA/n$n.ports.json" ] && break
        sleep 0.1
    done
    [ -f "$DATA/n$n.ports.json" ] || echo "local-cluster: n$n has not reported its ports yet" >&2
done
echo "local-cluster: running; try  curl http://127.0.0.1:4001/status/leader   (Ctrl-C stops all)"

# A writer that exits is reported; the others keep serving (two of three keep a quorum).
while [ "${#left[@]}" -gt 0 ]; do
    gone=
    wait -n -p gone "${left[@]}"
    status=$?
    [ -n "$gone" ] || continue # a signal interrupted the wait
    echo "local-cluster: writer $gone exited with status $status; the others go on" >&2
    still=()
    for pid in "${left[@]}"; do
        [ "$pid" = "$gone" ] || still+=("$pid")
    done
    left=("${still[@]}")
done
stopping=1
echo "local-cluster: no writer is left" >&2
