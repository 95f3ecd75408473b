#!/usr/bin/env bash
# lab.sh up|down: the local multi-host lab, in systemd containers on this machine.
#
#   up    set-up (scripts/setup.sh lab), then one container for every host of
#         inventories/lab (whatever its groups), reached over SSH as the user
#         `deploy` with sudo, as production hosts are; then playbooks/site.yml
#         against them, then the smoke check through the load balancer; prints
#         what runs where. Re-running it changes nothing and is quick.
#   down  removes the containers, the networks, the lab's cached facts and host
#         keys, and stops the Docker engine if wsfleet started it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"

inventory=inventories/lab
suite=trixie image=localhost/wsfleet/debian:13
private_net=wsfleet-lab-private private_subnet=172.30.231.0/24
front_net=wsfleet-lab-front
label=org.wsfleet.lab=1
# The lab's SSH material (inventories/lab/group_vars/all/connection.yml reads
# the same place): a key pair, the containers' host keys, and per container the
# id of the container whose bootstrap is done.
ssh_dir=$WSFLEET_CACHE/lab
ssh_key=$ssh_dir/id_ed25519
known_hosts=$ssh_dir/known_hosts
deploy_user=deploy

lab_hosts() { # lines "name groups private_address published_ports" (comma-separated lists, "-" for none)
  .venv/bin/ansible-inventory -i "$inventory" --list | .venv/bin/python -c '
import json, sys
inventory = json.load(sys.stdin)
hostvars = inventory["_meta"]["hostvars"]
groups = {}
for group, entry in inventory.items():
    if group in ("_meta", "all") or not isinstance(entry, dict):
        continue
    for host in entry.get("hosts", []):
        groups.setdefault(host, []).append(group)
problems = []
for host in sorted(hostvars):
    variables = hostvars[host]
    address = variables.get("wsfleet_private_address")
    if not address:
        problems.append(f"{host}: wsfleet_private_address is not set (the container needs its address)")
        continue
    ports = variables.get("wsfleet_lab_published_ports", [])
    if not isinstance(ports, list) or not all(isinstance(p, str) and p.startswith("127.0.0.1:") for p in ports):
        problems.append(f"{host}: wsfleet_lab_published_ports must be a list of docker -p values on 127.0.0.1, got {ports!r}")
        continue
    print(host, ",".join(groups.get(host, ["ungrouped"])), address, ",".join(ports) or "-")
if problems:
    sys.exit("inventories/lab: " + "; ".join(problems))
'
}

ensure_network() { # ensure_network NAME [docker network create options...]
  docker network inspect "$1" >/dev/null 2>&1 && return 0
  log "creating network $1"
  docker network create --label "$label" "${@:2}" "$1" >/dev/null
}

ensure_key_pair() {
  mkdir -p "$ssh_dir"
  chmod 700 "$ssh_dir"
  [ -f "$ssh_key" ] && return 0
  log "making the lab's SSH key pair ($ssh_key)"
  ssh-keygen -q -t ed25519 -N '' -C "wsfleet-lab@$(hostname)" -f "$ssh_key"
}

# ensure_container NAME GROUPS ADDRESS PORTS: create or start it; prints
# "created" or "started" when it did either (those need the prepare step).
ensure_container() {
  local name=$1 groups=$2 address=$3 ports=$4 state
  state=$(docker inspect -f '{{.State.Status}}' "$name" 2>/dev/null) || state=missing
  case $state in
    running) return 0 ;;
    missing) ;;
    *) log "starting $name"; docker start "$name" >/dev/null; echo started; return 0 ;;
  esac
  local what="$groups, $address" publish=() port
  [ "$ports" = - ] || what+=", publishing $ports"
  log "creating $name ($what)"
  if [ "$ports" != - ]; then
    for port in ${ports//,/ }; do publish+=(-p "$port"); done
  fi
  docker create --name "$name" --hostname "$name" --label "$label" \
    --privileged --cgroupns=host --stop-signal SIGRTMIN+3 \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /tmp \
    -v "$WSFLEET_CACHE/apt/$suite:/srv/wsfleet-apt:ro" \
    --network "$private_net" --ip "$address" "${publish[@]}" \
    "$image" >/dev/null
  # Docker publishes ports only through a network with a route out: the front.
  [ ${#publish[@]} -eq 0 ] || docker network connect "$front_net" "$name"
  docker start "$name" >/dev/null
  echo created
}

# bootstrap NAME ADDRESS: the one `docker exec` into a container, once, after
# it is created: wait for sshd, add the user `deploy` (the lab's public key,
# passwordless sudo) and record the container's own host keys, read from the
# container itself, in the lab's known_hosts. Everything after goes over SSH.
bootstrap() {
  local name=$1 address=$2 id host_keys
  id=$(docker inspect -f '{{.Id}}' "$name")
  [ "$(cat "$ssh_dir/bootstrapped/$name" 2>/dev/null)" = "$id" ] && return 0
  log "bootstrapping $name: user $deploy_user with sudo, SSH key, host keys"
  host_keys=$(docker exec -e DEPLOY_USER="$deploy_user" -e DEPLOY_KEY="$(cat "$ssh_key.pub")" "$name" sh -euc '
    # sshd makes the host keys at its first start (ssh.service drop-in).
    i=0
    until systemctl is-active --quiet ssh.service; do
      i=$((i + 1)); [ $i -le 600 ] || { echo "sshd did not start" >&2; exit 1; }
      sleep 0.1
    done
    id "$DEPLOY_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$DEPLOY_USER"
    home=$(getent passwd "$DEPLOY_USER" | cut -d: -f6)
    install -d -m 0700 -o "$DEPLOY_USER" -g "$DEPLOY_USER" "$home/.ssh"
    echo "$DEPLOY_KEY" > "$home/.ssh/authorized_keys"
    chown "$DEPLOY_USER:$DEPLOY_USER" "$home/.ssh/authorized_keys"
    chmod 0600 "$home/.ssh/authorized_keys"
    echo "$DEPLOY_USER ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/wsfleet-deploy
    chmod 0440 /etc/sudoers.d/wsfleet-deploy
    visudo -cqf /etc/sudoers.d/wsfleet-deploy
    cat /etc/ssh/ssh_host_*_key.pub') || die "bootstrapping $name failed"
  # A connection kept open (ControlPersist) to an earlier container at this
  # address would lead nowhere: close it.
  ssh -o ControlPath="$ssh_dir/cp-%C" -O exit "$deploy_user@$address" 2>/dev/null || true
  mkdir -p "$ssh_dir/bootstrapped" "$ssh_dir/host-keys"
  echo "$host_keys" | awk -v address="$address" '{print address, $1, $2}' > "$ssh_dir/host-keys/$name"
  echo "$id" > "$ssh_dir/bootstrapped/$name"
}

write_known_hosts() { # the lab's known_hosts: the host keys of the lab's containers, nothing else
  local name
  : > "$known_hosts.new"
  while read -r name _; do
    cat "$ssh_dir/host-keys/$name" >> "$known_hosts.new"
  done < <(echo "$hosts")
  mv "$known_hosts.new" "$known_hosts"
}

lab_ssh() { # lab_ssh ADDRESS CMD: a command on a lab host, over the lab's SSH (and Ansible's open connection)
  ssh -n -q -i "$ssh_key" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$known_hosts" -o StrictHostKeyChecking=yes \
    -o ControlMaster=auto -o ControlPersist=10m -o ControlPath="$ssh_dir/cp-%C" \
    "$deploy_user@$1" "$2"
}

playbook() { # playbook FILE [args...]
  # Facts are kept for a day, not ansible.cfg's hour: a lab container's memory,
  # CPUs and addresses do not change while it lives, and `make lab-down` clears
  # them. A no-change `make lab` an hour later then gathers nothing either.
  ANSIBLE_CACHE_PLUGIN_TIMEOUT=86400 .venv/bin/ansible-playbook -i "$inventory" "$@"
}

up() {
  local started=$SECONDS
  "$WSFLEET_ROOT/scripts/setup.sh" lab
  hosts=$(lab_hosts) || die "the lab inventory is not usable (see above)"

  # The private network is internal: no route out for any host. This machine
  # reaches the containers on it (Ansible's SSH); hosts that publish ports are
  # also on the front network, and only those ports face this machine.
  ensure_network "$private_net" --internal --subnet "$private_subnet"
  ensure_network "$front_net"
  ensure_key_pair

  # Containers are created and bootstrapped side by side (each waits for its
  # own boot); those created or started now get the prepare step.
  local name groups address ports fresh=() pids=() status
  declare -A outcome_file=()
  while read -r name groups address ports; do
    outcome_file[$name]=$(mktemp)
    { ensure_container "$name" "$groups" "$address" "$ports" > "${outcome_file[$name]}" \
        && bootstrap "$name" "$address"; } &
    pids+=($!)
  done < <(echo "$hosts")
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  [ $status -eq 0 ] || die "creating the lab's containers failed (see above)"
  for name in "${!outcome_file[@]}"; do
    [ -s "${outcome_file[$name]}" ] && fresh+=("$name")
    rm -f "${outcome_file[$name]}"
  done
  write_known_hosts

  if [ ${#fresh[@]} -gt 0 ]; then
    log "preparing ${fresh[*]} (systemd booted, offline package repository)"
    local prepare_log=$WSFLEET_CACHE/lab-prepare.log
    playbook molecule/shared/prepare.yml --limit "$(IFS=,; echo "${fresh[*]}")" >"$prepare_log" || {
      tail -n 30 "$prepare_log"; die "preparing the lab failed (log: $prepare_log)"; }
  fi

  log "deploying the stack: playbooks/site.yml"
  local site_log=$WSFLEET_CACHE/lab-site.log
  playbook playbooks/site.yml | tee "$site_log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "site.yml failed (log: $site_log)"

  log "smoke check through the load balancer: playbooks/smoke.yml"
  playbook playbooks/smoke.yml

  summary "$site_log" $((SECONDS - started))
}

published() { # published PORTS CONTAINER_PORT: the 127.0.0.1 port that publishes CONTAINER_PORT, if any
  echo "${1//,/ }" | tr ' ' '\n' | awk -F: -v port="$2" '$3 == port || $3 == port "/tcp" {print $2; exit}'
}

summary() { # summary SITE_LOG SECONDS
  local changes name groups address ports runs group http https prometheus
  changes=$(sed -n 's/.*changed=\([0-9]*\).*/\1/p' "$1" | awk '{sum += $1} END {print sum + 0}')
  echo
  echo "wsfleet lab is up in $2 s ($changes changes in this run of site.yml)"
  echo
  printf '  %-20s %-14s %-15s %s\n' CONTAINER GROUP ADDRESS RUNS
  local links=()
  while read -r name groups address ports; do
    runs=()
    for group in ${groups//,/ }; do
      case $group in
        loadbalancers)
          http=$(published "$ports" 80) https=$(published "$ports" 443)
          if [ "$ports" = - ]; then runs+=(nginx); else runs+=("nginx (published: $ports)"); fi
          [ -z "$http" ] || links+=("demo page:   http://127.0.0.1:$http/${https:+   (https://127.0.0.1:$https/, self-signed)}")
          [ -z "$http" ] || links+=("try it:      .venv/bin/wsfleet client ws://127.0.0.1:$http/ws --room lobby")
          ;;
        ws_servers)
          runs+=("$(lab_ssh "$address" "systemctl list-units --plain --no-legend 'wsfleet@*' | awk '{print \$1}' | paste -sd' ' -")") ;;
        redis)
          runs+=("$(lab_ssh "$address" "systemctl list-units --plain --no-legend --type=service '*redis*' '*valkey*' | awk '{print \$1}' | paste -sd' ' -")") ;;
        monitoring)
          prometheus=$(published "$ports" 9090)
          runs+=("Prometheus")
          links+=("Prometheus: http://127.0.0.1:${prometheus:-9090}/ (alerts: /alerts)") ;;
        *)
          [ "$ports" = - ] || runs+=("published: $ports") ;;
      esac
    done
    printf '  %-20s %-14s %-15s %s\n' "$name" "$groups" "$address" "${runs[*]}"
  done < <(echo "$hosts")
  echo
  local link
  for link in "${links[@]}"; do echo "  $link"; done
  echo "  log in:      ssh -i $ssh_key -o UserKnownHostsFile=$known_hosts $deploy_user@ADDRESS"
  echo "  remove it:   make lab-down"
}

down() {
  local containers networks
  containers=$(docker ps -aq --filter "label=$label" 2>/dev/null || true)
  [ -n "$containers" ] && { log "removing the lab containers"; docker rm -f $containers >/dev/null; }
  networks=$(docker network ls -q --filter "label=$label" 2>/dev/null || true)
  [ -n "$networks" ] && { log "removing the lab networks"; docker network rm $networks >/dev/null; }
  # The key pair stays (it is the lab's, not a container's); the host keys and
  # bootstrap records were those of the containers just removed.
  local socket
  for socket in "$ssh_dir"/cp-*; do
    [ -S "$socket" ] && ssh -o ControlPath="$socket" -O exit lab 2>/dev/null || true
  done
  rm -rf "$WSFLEET_ROOT/.cache/facts" "$ssh_dir/bootstrapped" "$ssh_dir/host-keys" "$known_hosts"
  "$WSFLEET_ROOT/scripts/docker/engine.sh" stop
  log "the lab is gone"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
