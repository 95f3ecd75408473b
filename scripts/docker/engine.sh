#!/usr/bin/env bash
# Make sure a Docker engine answers, starting one only when none does.
#
#   engine.sh start   use the engine that answers `docker info`; otherwise install
#                     docker.io and start dockerd in the background (with the
#                     capability-filter runtime only when this host needs it)
#   engine.sh stop    stop the engine, but only if `start` started it
#
# A daemon we did not start is never touched.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

state_dir=$WSFLEET_CACHE/docker
pidfile=$state_dir/dockerd.pid
logfile=$state_dir/dockerd.log

engine_answers() { docker info >/dev/null 2>&1; }

# The host lacks capabilities in its bounding set that runc would request for a
# privileged container (PLATFORM.md: CAP_SYS_RESOURCE on the CI machines).
host_needs_capfilter() {
  local last mask full
  last=$(cat /proc/sys/kernel/cap_last_cap)
  mask=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  full=$(( (1 << (last + 1)) - 1 ))
  [ $(( 0x$mask & full )) -ne $full ]
}

install_engine() {
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
}

start() {
  if engine_answers; then
    log "using the Docker engine that answers on $(docker context inspect -f '{{.Endpoints.docker.Host}}' 2>/dev/null || echo 'the default socket')"
    return 0
  fi
  install_engine
  mkdir -p "$state_dir"
  rm -f "$state_dir/started-by-wsfleet"
  local runtime_args=()
  if host_needs_capfilter; then
    log "this host's capability bounding set is reduced: dockerd gets the capfilter runtime"
    runtime_args=(--add-runtime "capfilter=$WSFLEET_ROOT/scripts/docker/runc-capfilter" --default-runtime capfilter)
  fi
  log "starting dockerd (log: $logfile)"
  # In a session of its own: the lab outlives the command that started it, so its
  # engine must not die with that command's terminal or process group.
  as_root bash -c 'setsid nohup dockerd --pidfile "$1" "${@:3}" >"$2" 2>&1 </dev/null &' _ "$pidfile" "$logfile" "${runtime_args[@]}"
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$logfile" >&2; die "dockerd did not answer within 60 s"; }
    sleep 0.5
  done
  touch "$state_dir/started-by-wsfleet"
  log "dockerd is up"
}

stop() {
  [ -e "$state_dir/started-by-wsfleet" ] || return 0
  rm -f "$state_dir/started-by-wsfleet"
  [ -s "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 0
  log "stopping the dockerd this run started (pid $pid)"
  as_root kill "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
