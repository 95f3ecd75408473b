#!/usr/bin/env bash
# bench-lab.sh [--report FILE]: `wsfleet bench connect` and `fanout` through the
# lab's load balancer (what `make lab` brought up), and the same sizes on loopback,
# side by side in one Markdown section (printed; appended to FILE with --report).
#
# Targets (WSFLEET_BENCH_LAB_TARGETS, default "lb-private loopback"):
#   lb-private    nginx on its private address (ws://172.30.231.10/ws): this
#                 machine is on the lab's private network, so the path is
#                 client -> nginx -> wsfleet instances -> Redis, as in production.
#   loopback      `wsfleet bench suite --targets wsfleet` on loopback: a
#                 redis-server and as many `wsfleet serve` processes as the lab
#                 has instances, no load balancer.
#   lb-published  the port the lab publishes here (wsfleet_smoke_url,
#                 ws://127.0.0.1:8080/ws): the same behind Docker's docker-proxy,
#                 which holds 6 open files per connection (2 sockets, 2 splice
#                 pipes) and, when it runs out, stops accepting and exits: every
#                 connection through it drops and the port stays dead until the
#                 container restarts. So it is refused above its open-file limit / 6
#                 connections (~3,300 with the engine's 20,000).
# The lab's processes run in containers on this machine's kernel: their CPU is
# read from /proc by host PID (scripts/bench_lab.py pids), nginx's with
# --proxy-pid. The lab's servers keep their deployed settings (log level info,
# 50 frames/s per connection: the 80 publishers stay under it at 1,000/s).
#
# Sizes (environment): WSFLEET_BENCH_LAB_CONNECT (5000), _ROOMS (20), _MEMBERS
# (50 per room), _PUBLISHERS (80), _RATES ("200 1000" messages/s), _DURATION (10 s).
# Results (JSON, logs): WSFLEET_BENCH_OUT (default ~/.cache/wsfleet/bench-lab/STAMP).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"

report=""
case "${1:-}" in
  --report) report=${2:?--report needs a file}; shift 2 ;;
  "") ;;
  *) die "usage: $0 [--report FILE]" ;;
esac

venv=$WSFLEET_ROOT/.venv
[ -x "$venv/bin/wsfleet" ] || die "no virtualenv: run 'make setup' (or scripts/setup.sh host) first"
command -v redis-server >/dev/null || apt_install redis-server
helper() { "$venv/bin/python" scripts/bench_lab.py "$@"; }

connect=${WSFLEET_BENCH_LAB_CONNECT:-5000}
rooms=${WSFLEET_BENCH_LAB_ROOMS:-20}
members=${WSFLEET_BENCH_LAB_MEMBERS:-50}
publishers=${WSFLEET_BENCH_LAB_PUBLISHERS:-80}
rates=${WSFLEET_BENCH_LAB_RATES:-200 1000}
duration=${WSFLEET_BENCH_LAB_DURATION:-10}
wanted=${WSFLEET_BENCH_LAB_TARGETS:-lb-private loopback}

# The lab must be up: every container running and the load balancer answering a
# WebSocket handshake (101) on each URL benchmarked. Nothing here starts it.
lab_down() { die "the lab is not up ($*): run 'make lab' first"; }
docker info >/dev/null 2>&1 || lab_down "the Docker engine does not answer"
declare -A urls=()
while read -r name url; do urls[$name]=$url; done < <(helper targets)
[ ${#urls[@]} -gt 0 ] || lab_down "no load balancer URL from inventories/lab (see above)"
for host in $("$venv/bin/ansible-inventory" -i inventories/lab --list | "$venv/bin/python" -c '
import json, sys
print(" ".join(sorted(json.load(sys.stdin)["_meta"]["hostvars"])))'); do
  [ "$host" = localhost ] && continue
  [ "$(docker inspect -f '{{.State.Status}}' "$host" 2>/dev/null)" = running ] || lab_down "container $host is not running"
done
for target in $wanted; do
  [ "$target" = loopback ] && continue
  [ -n "${urls[$target]:-}" ] || die "unknown target $target (the lab has: ${!urls[*]} loopback)"
  http=${urls[$target]/#ws:/http:}
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: d3NmbGVldC1iZW5jaC1sYg==' "$http" || true)
  [ "$code" = 101 ] || lab_down "${urls[$target]} answered a handshake with '${code:-nothing}', not 101"
done

servers=$(helper pids ws_servers '(^|/)wsfleet serve|-m wsfleet serve')
redis=$(helper pids redis '^[^ ]*(redis-server|valkey-server)')
nginx=$(helper pids loadbalancers '^nginx: ')
[ -n "$servers" ] || lab_down "no wsfleet server process in the ws_servers containers"
[ -n "$nginx" ] || lab_down "no nginx process in the loadbalancers containers"
server_count=$(wc -w <<<"$servers")
pid_flags=()
for pid in $servers; do pid_flags+=(--server-pid "$pid"); done
for pid in $nginx; do pid_flags+=(--proxy-pid "$pid"); done
[ -z "$redis" ] || pid_flags+=(--redis-pid "${redis%% *}")

stamp=$(date -u +%Y%m%d-%H%M%S) started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
out=${WSFLEET_BENCH_OUT:-$WSFLEET_CACHE/bench-lab/$stamp}
mkdir -p "$out"
log "results in $out; lab: $server_count wsfleet instances (PIDs $servers), nginx PIDs $nginx, Redis PID ${redis:-not found}"

failures=()
run() { # run NAME wsfleet-bench-args...: one run; a failure is recorded, not fatal
  local name=$1
  shift
  log "$name: wsfleet bench $*"
  "$venv/bin/wsfleet" bench "$@" --progress lines > "$out/$name.txt" 2> "$out/$name.log" || {
    log "$name exited with status $? (see $out/$name.log)"; failures+=("$name"); }
  cat "$out/$name.txt" >&2
  sleep 3 # let the closed connections leave the kernel's tables
}
fanout_flags=(--rooms "$rooms" --clients-per-room "$members" --publishers "$publishers" --duration "$duration")

# Per target: the flags of its runs (the lab's PIDs; the published port's
# docker-proxy as a proxy too), or "skip" when it cannot carry the sizes.
declare -A target_flags=()
for target in $wanted; do
  [ "$target" = loopback ] && continue
  flags=("${pid_flags[@]}")
  if [ "$target" = lb-published ]; then
    url=${urls[$target]}
    port=${url#*://*:}
    port=${port%%/*}
    forwarder=$("$venv/bin/python" -c "from wsfleet.bench import procstat; print(procstat.listener_pid($port) or '')")
    [ -n "$forwarder" ] || lab_down "nothing listens on the published port $port"
    flags+=(--proxy-pid "$forwarder")
    capacity=$(( $(awk '/^Max open files/ {print $4}' "/proc/$forwarder/limits") / 6 - 100 ))
    most=$(( connect > rooms * members + publishers ? connect : rooms * members + publishers ))
    if [ "$most" -gt "$capacity" ]; then
      log "skipping $target: $most connections would exhaust docker-proxy's open files (room for ~$capacity; it would exit)"
      failures+=("$target (skipped: $most connections > docker-proxy's ~$capacity)")
      target_flags[$target]=skip
      continue
    fi
  fi
  target_flags[$target]="${flags[*]}"
done

# Scenario by scenario, every target in turn: whatever else loads the machine
# meanwhile falls on both sides alike. The loopback side is one suite run per
# scenario (a fresh redis-server and servers each time, as `make bench` does).
suite_flags=(suite --targets wsfleet --rounds 1 --servers "$server_count" --connect "$connect"
  --fanout-rooms "$rooms" --fanout-clients "$members" --fanout-publishers "$publishers"
  --fanout-duration "$duration")
for step in connect $rates; do
  for target in $wanted; do
    if [ "$target" = loopback ]; then
      if [ "$step" = connect ]; then
        run loopback-connect "${suite_flags[@]}" --scenarios connect --out "$out/loopback-connect"
      else
        run "loopback-fanout-$step" "${suite_flags[@]}" --scenarios fanout --fanout-rate "$step" \
          --out "$out/loopback-fanout-$step"
      fi
      continue
    fi
    [ "${target_flags[$target]}" = skip ] && continue
    read -ra flags <<<"${target_flags[$target]}"
    url=${urls[$target]}
    if [ "$step" = connect ]; then
      run "lab-$target-connect" connect --url "$url" --label "$target" -n "$connect" \
        "${flags[@]}" --json "$out/lab-$target-connect.json"
    else
      run "lab-$target-fanout-$step" fanout --url "$url" --label "$target" "${fanout_flags[@]}" \
        --rate "$step" "${flags[@]}" --json "$out/lab-$target-fanout-$step.json"
    fi
  done
done

# What the report needs besides the results.
urls_json=$(for t in "${!urls[@]}"; do printf '%s\n' "$t ${urls[$t]}"; done)
BENCH_TARGETS=$wanted BENCH_URLS=$urls_json BENCH_STARTED=$started BENCH_LOADAVG="$loadavg" BENCH_LOADAVG_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)" \
BENCH_NGINX=$nginx BENCH_SERVERS=$servers BENCH_CONNECT=$connect BENCH_ROOMS=$rooms \
BENCH_MEMBERS=$members BENCH_PUBLISHERS=$publishers BENCH_DURATION=$duration \
BENCH_RATES=$rates BENCH_FAILURES="$(IFS=';'; echo "${failures[*]:-}")" helper settings "$out/settings.json"

# The command as run: the sizes that were set, then the script.
command=$(env | { grep -E '^WSFLEET_BENCH_LAB_' || true; } | sort | sed -E "s/^([^=]*)=(.*)$/\1='\2'/" | paste -sd' ' -)
command="${command:+$command }scripts/bench-lab.sh${report:+ --report $report}"
section=$(helper report "$out" "$command")
echo "$section"
if [ -n "$report" ]; then
  printf '\n%s\n' "$section" >> "$report"
  log "appended to $report"
fi
[ ${#failures[@]} -eq 0 ] || { log "runs that failed: ${failures[*]}"; exit 1; }
