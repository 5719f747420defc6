#!/usr/bin/env bash
# Builds unison-writer (release) in build-release/ and starts it in the foreground. With no
# arguments: a single writer with data in ./unison-data, HTTP on 127.0.0.1:4000, RESP on
# 127.0.0.1:6380, raft on 127.0.0.1:4100 and a `default` namespace. Arguments go to the writer
# (see `unison-writer --help` and docs/configuration.md).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build="$src/build-release"
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$src" --buildtype=release >/dev/null
fi
ninja -C "$build" writer/unison-writer >/dev/null
exec "$build/writer/unison-writer" "$@"
