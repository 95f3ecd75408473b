#!/usr/bin/env bash
# lab.sh up|down: the local multi-host lab, in systemd containers on this machine.
#
#   up    set-up (scripts/setup.sh), then the containers and networks described by
#         inventories/lab, then playbooks/site.yml against them, then the smoke
#         check through the load balancer; prints what runs where. Re-running it
#         changes nothing and is quick.
#   down  removes the containers, the networks and the lab's cached facts, and
#         stops the Docker engine if wsfleet started it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"

inventory=inventories/lab
suite=trixie image=localhost/wsfleet/debian:13
private_net=wsfleet-lab-private private_subnet=172.30.231.0/24
front_net=wsfleet-lab-front
label=org.wsfleet.lab=1

lab_hosts() { # lines "name group private_address" from the inventory
  .venv/bin/ansible-inventory -i "$inventory" --list | .venv/bin/python -c '
import json, sys
inventory = json.load(sys.stdin)
hostvars = inventory["_meta"]["hostvars"]
for group in ("loadbalancers", "ws_servers", "redis"):
    for host in inventory.get(group, {}).get("hosts", []):
        print(host, group, hostvars[host]["wsfleet_private_address"])
'
}

ensure_network() { # ensure_network NAME [docker network create options...]
  docker network inspect "$1" >/dev/null 2>&1 && return 0
  log "creating network $1"
  docker network create --label "$label" "${@:2}" "$1" >/dev/null
}

ensure_container() { # ensure_container NAME GROUP ADDRESS
  local name=$1 group=$2 address=$3 state
  state=$(docker inspect -f '{{.State.Status}}' "$name" 2>/dev/null) || state=missing
  case $state in
    running) return 0 ;;
    missing) ;;
    *) log "starting $name"; docker start "$name" >/dev/null; return 0 ;;
  esac
  log "creating $name ($group, $address)"
  local extra=()
  if [ "$group" = loadbalancers ]; then
    extra=(-p "127.0.0.1:$http_port:80" -p "127.0.0.1:$https_port:443")
  fi
  docker create --name "$name" --hostname "$name" --label "$label" \
    --privileged --cgroupns=host --stop-signal SIGRTMIN+3 \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /tmp \
    -v "$WSFLEET_CACHE/apt/$suite:/srv/wsfleet-apt:ro" \
    --network "$private_net" --ip "$address" "${extra[@]}" \
    "$image" >/dev/null
  [ "$group" = loadbalancers ] && docker network connect "$front_net" "$name"
  docker start "$name" >/dev/null
}

playbook() { # playbook FILE [args...]: run and keep the recap for the summary
  .venv/bin/ansible-playbook -i "$inventory" "$@"
}

up() {
  "$WSFLEET_ROOT/scripts/docker/engine.sh" start
  "$WSFLEET_ROOT/scripts/setup.sh"
  http_port=$(lab_var wsfleet_lab_http_port)
  https_port=$(lab_var wsfleet_lab_https_port)

  # The private network is internal: the servers and Redis have no route out,
  # and only the load balancer's published ports face this machine.
  ensure_network "$private_net" --internal --subnet "$private_subnet"
  ensure_network "$front_net"
  while read -r name group address; do
    ensure_container "$name" "$group" "$address"
  done < <(lab_hosts)

  log "preparing the containers (systemd booted, offline package repository)"
  playbook molecule/shared/prepare.yml >"$WSFLEET_CACHE/lab-prepare.log" || {
    tail -n 30 "$WSFLEET_CACHE/lab-prepare.log"; die "preparing the lab failed (log: $WSFLEET_CACHE/lab-prepare.log)"; }

  log "deploying the stack: playbooks/site.yml"
  local site_log=$WSFLEET_CACHE/lab-site.log
  playbook playbooks/site.yml | tee "$site_log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "site.yml failed (log: $site_log)"

  log "smoke check through the load balancer: playbooks/smoke.yml"
  playbook playbooks/smoke.yml

  summary "$site_log"
}

lab_var() { # lab_var NAME: a plain variable of the lab inventory (as the load balancer sees it)
  .venv/bin/ansible-inventory -i "$inventory" --host wsfleet-lab-lb1 \
    | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

summary() { # summary SITE_LOG
  local changes
  changes=$(sed -n 's/.*changed=\([0-9]*\).*/\1/p' "$1" | awk '{sum += $1} END {print sum + 0}')
  echo
  echo "wsfleet lab is up ($changes changes in this run of site.yml)"
  echo
  printf '  %-20s %-14s %-15s %s\n' CONTAINER GROUP ADDRESS RUNS
  while read -r name group address; do
    local runs
    case $group in
      loadbalancers) runs="nginx (published on 127.0.0.1:$http_port and :$https_port)" ;;
      ws_servers) runs=$(docker exec "$name" sh -c "systemctl list-units --plain --no-legend 'wsfleet@*' | awk '{print \$1}' | paste -sd' ' -") ;;
      redis) runs=$(docker exec "$name" sh -c "systemctl list-units --plain --no-legend --type=service '*redis*' '*valkey*' | awk '{print \$1}' | paste -sd' ' -") ;;
    esac
    printf '  %-20s %-14s %-15s %s\n' "$name" "$group" "$address" "$runs"
  done < <(lab_hosts)
  echo
  echo "  demo page:   http://127.0.0.1:$http_port/   (https://127.0.0.1:$https_port/, self-signed)"
  echo "  try it:      .venv/bin/wsfleet client ws://127.0.0.1:$http_port/ws --room lobby"
  echo "  remove it:   make lab-down"
}

down() {
  local containers networks
  containers=$(docker ps -aq --filter "label=$label" 2>/dev/null || true)
  [ -n "$containers" ] && { log "removing the lab containers"; docker rm -f $containers >/dev/null; }
  networks=$(docker network ls -q --filter "label=$label" 2>/dev/null || true)
  [ -n "$networks" ] && { log "removing the lab networks"; docker network rm $networks >/dev/null; }
  rm -rf "$WSFLEET_ROOT/.cache/facts"
  "$WSFLEET_ROOT/scripts/docker/engine.sh" stop
  log "the lab is gone"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
