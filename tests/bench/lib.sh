# Shell pieces shared by the benchmark scripts (sourced, not run): every process a benchmark
# starts is recorded in PIDS and stopped by its PID, and ports come from the servers' ports files.

PIDS=()

# stop_pid PID [grace seconds]: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local pid=$1 grace=${2:-30} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pid $pid did not stop in ${grace}s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# stop_all: every process in PIDS, each given 10 s.
stop_all() {
    local pid
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        stop_pid "$pid" 10
    done
    PIDS=()
}

# forget_pid PID: a process that is no longer running.
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        [ "$p" != "$1" ] && keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# port_of PORTS_FILE NAME: a port from a --ports-file JSON.
port_of() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# wait_ports PID PORTS_FILE LOG: until the server wrote its ports file (exits if it died).
wait_ports() {
    local i
    for ((i = 0; i < 100; i++)); do
        [ -s "$2" ] && return 0
        kill -0 "$1" 2>/dev/null || { tail -20 "$3" >&2; exit 1; }
        sleep 0.1
    done
    echo "no ports file $2" >&2
    exit 1
}

# wait_writer_ready HTTP_PORT: leader, barrier applied, and the default namespace exists.
wait_writer_ready() {
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 &&
            curl -sf "http://127.0.0.1:$1/api/v1" 2>/dev/null | grep -q '"default"' && return 0
        sleep 0.1
    done
    echo "unison-writer on port $1 did not become ready" >&2
    exit 1
}

# bench_build TARGET...: builds the ninja targets in a release build in $BUILD (configured on first
# use) and sets BUILT_AT to the commit they were built from.
bench_build() {
    echo "=== build (release) in $BUILD"
    if [ ! -f "$BUILD/build.ninja" ]; then
        meson setup "$BUILD" --buildtype=release >/dev/null
    fi
    ninja -C "$BUILD" "$@" >/dev/null
    BUILT_AT="commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' with uncommitted changes')"
}

# bench_workspace NAME: a fresh data directory DATA ($BUILD/NAME-bench-data, removed on exit, as
# every process in PIDS is stopped) and a log directory LOGS ($BUILD/bench-logs/NAME-<time>, kept).
bench_workspace() {
    DATA=$BUILD/$1-bench-data
    LOGS=$BUILD/bench-logs/$1-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$LOGS"
    rm -rf "$DATA"
    mkdir -p "$DATA"
    trap 'stop_all; rm -rf "$DATA"' EXIT
    trap 'exit 130' INT TERM
}

# bench_budget: the run ends at DEADLINE, BUDGET seconds from now; see left.
bench_budget() {
    DEADLINE=$(($(date +%s) + BUDGET))
}

# left: sets LEFT to the seconds the budget still allows, or stops the benchmark (called in the
# script's own shell, not in $(...), so that the exit stops the script).
left() {
    LEFT=$((DEADLINE - $(date +%s)))
    if [ "$LEFT" -le 5 ]; then
        echo "time budget of ${BUDGET}s exhausted" >&2
        exit 1
    fi
}
