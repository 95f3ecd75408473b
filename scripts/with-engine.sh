#!/usr/bin/env bash
# with-engine.sh CMD...: run CMD with a Docker engine available. When no engine
# answered before, the one started here is stopped again when CMD ends, so a
# test run leaves the machine as it found it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if docker info >/dev/null 2>&1; then
  exec "$@"
fi
"$WSFLEET_ROOT/scripts/docker/engine.sh" start
trap '"$WSFLEET_ROOT/scripts/docker/engine.sh" stop' EXIT
"$@"
