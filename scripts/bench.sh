#!/usr/bin/env bash
# bench.sh [wsfleet bench suite flags...]: what `make bench` runs after `setup.sh host`.
# Installs the Node peers (bench-peers/, from package-lock.json), then runs
# `wsfleet bench suite`: a redis-server and K server processes of each target on
# loopback, every scenario against wsfleet, the Node ws peer and the Socket.IO
# peer in turn, and a section with the figures appended to BENCHMARKS.md.
# Everything it starts stops with it: the suite's children die with it, the load
# workers exit when their stdin closes, and a trap ends the suite itself.
# `--targets wsfleet,wsfleet-cluster,wsfleet-cluster-r1` compares one Redis with a
# 3-primary Redis Cluster (and 3+3 with --publish-replicas 1) that the suite starts
# on 127.0.0.1:7500-7505 (BENCHMARKS.md, "How it measures").
# Sizes: the suite's defaults (see `wsfleet bench suite --help`), or flags given here;
# WSFLEET_BENCH_OUT chooses where the JSON and PNG files go.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"

venv=$WSFLEET_ROOT/.venv
[ -x "$venv/bin/wsfleet" ] || die "no virtualenv: run 'make setup' (or scripts/setup.sh host) first"
command -v redis-server >/dev/null || apt_install redis-server

# The peers need Node.js and their npm packages; without them the suite measures
# wsfleet alone and says so in the report.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm || log "no Node.js: the peers will be skipped"
fi
if command -v npm >/dev/null; then
  lock=bench-peers/package-lock.json installed=bench-peers/node_modules/.package-lock.json
  if [ ! -f "$installed" ] || [ "$lock" -nt "$installed" ]; then
    log "installing the benchmark peers (npm ci in bench-peers/)"
    (cd bench-peers && npm ci --no-audit --no-fund --loglevel=error) || log "npm ci failed: the peers will be skipped"
  fi
fi

out=${WSFLEET_BENCH_OUT:-$WSFLEET_CACHE/bench}
mkdir -p "$out"
args=(--out "$out" --report BENCHMARKS.md "$@")
log "wsfleet bench suite ${args[*]}"
"$venv/bin/wsfleet" bench suite --record-command "make bench${*:+ (scripts/bench.sh $*)}" "${args[@]}" &
suite=$!
trap 'kill -INT "$suite" 2>/dev/null; wait "$suite" 2>/dev/null' INT TERM
trap 'kill "$suite" 2>/dev/null || true' EXIT
wait "$suite"
