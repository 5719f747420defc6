#!/usr/bin/env bash
# Runs a replication tree on loopback, in the foreground: one writer -> 3 relayers -> 9 relayers
# (3 under each). Every process binds port 0 and reports its ports in a ports file; each relayer
# follows the HTTP port its parent reported. Prints a table of the endpoints, then waits; on exit
# (Ctrl-C, SIGTERM, or any process stopping) stops every process by PID with SIGTERM, leaves
# first, and waits for them.
#
#   deploy/relayer-tree.sh                    binaries from build/, data in ./relayer-tree-data
#   UNISON_BUILD=/path/build TREE_DIR=/var/tmp/tree deploy/relayer-tree.sh
#   FANOUT=2 deploy/relayer-tree.sh           writer -> 2 -> 4
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${UNISON_BUILD:-$HERE/../build}
WRITER=$BUILD/writer/unison-writer
RELAYER=$BUILD/relayer/unison-relayer
for b in "$WRITER" "$RELAYER"; do
    if [ ! -x "$b" ]; then
        echo "relayer-tree: $b is missing; build it (ninja -C build) or set UNISON_BUILD" >&2
        exit 2
    fi
done
DATA=${TREE_DIR:-./relayer-tree-data}
FANOUT=${FANOUT:-3}
mkdir -p "$DATA"

pids=()   # in start order: the writer, the middle relayers, the leaves
names=()
stopping=0
stop_all() {
    [ "$stopping" = 1 ] && return
    stopping=1
    local i
    # Leaves first: a relayer stops faster when nobody streams from it any more.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null
        echo "relayer-tree: ${names[$i]} (pid ${pids[$i]}) exited with status $?" >&2
    done
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

# wait_port NAME FILE: prints the HTTP port once FILE exists (10 s at most).
wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        if [ -s "$2" ]; then
            sed -n 's/.*"http":\([0-9]*\).*/\1/p' "$2"
            return 0
        fi
        sleep 0.1
    done
    echo "relayer-tree: $1 did not report its ports (see its log)" >&2
    return 1
}

# start NAME ARGS...: starts a process with its log prefixed by NAME; sets PORT.
start() {
    local name=$1 bin=$2
    shift 2
    rm -f "$DATA/$name.ports.json"
    # setsid: a Ctrl-C on the terminal reaches this script only, which sends one SIGTERM each.
    setsid "$bin" --data-dir "$DATA/$name" --ports-file "$DATA/$name.ports.json" \
        --http 127.0.0.1:0 --resp 127.0.0.1:0 "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
    pids+=($!)
    names+=("$name")
    PORT=$(wait_port "$name" "$DATA/$name.ports.json") || exit 1
    printf 'relayer-tree: %-6s pid %-7s http://127.0.0.1:%s\n' "$name" "${pids[-1]}" "$PORT"
}

start w "$WRITER" --raft 127.0.0.1:0
WPORT=$PORT
for ((i = 1; i <= FANOUT; i++)); do
    start "r$i" "$RELAYER" --id "r$i" --upstream "http://127.0.0.1:$WPORT"
    mid=$PORT
    for ((j = 1; j <= FANOUT; j++)); do
        start "r$i$j" "$RELAYER" --id "r$i$j" --upstream "http://127.0.0.1:$mid"
    done
done
echo "relayer-tree: running; write to the writer, read anywhere:"
echo "  curl -X PUT http://127.0.0.1:$WPORT/api/v1/default/kv/hello -d '{\"value\":\"d29ybGQ=\"}'"
echo "  curl http://127.0.0.1:$PORT/api/v1/default/kv/hello     # the last leaf"
echo "  curl http://127.0.0.1:$PORT/status/upstream"
echo "(Ctrl-C stops all)"

# Returns as soon as one process exits; the EXIT trap then stops the others.
wait -n "${pids[@]}"
