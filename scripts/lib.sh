# Shared shell functions for the set-up scripts. Sourced, never run.
# shellcheck shell=bash

WSFLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Images, offline repositories and engine state outlive one checkout, so a fresh
# clone on the same machine reuses them.
WSFLEET_CACHE=${WSFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wsfleet}
export WSFLEET_ROOT WSFLEET_CACHE

log() { printf '\033[1m[wsfleet]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[wsfleet] error:\033[0m %s\n' "$*" >&2; exit 1; }

# as_root CMD...: run as root, through sudo when we are not root already.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PKG...: install Debian packages that are missing, updating the
# package lists once per run.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ -z "${WSFLEET_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    WSFLEET_APT_UPDATED=1
  fi
  # We want the programs, not running services: keep the packages' scripts from
  # starting daemons (redis-server, dockerd) on this machine.
  local blocker=/usr/sbin/policy-rc.d placed=""
  if [ ! -e $blocker ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee $blocker >/dev/null
    as_root chmod +x $blocker
    placed=1
  fi
  local status=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ -n "$placed" ] && as_root rm -f $blocker
  return $status
}

# recipe_hash FILE...: a short digest of the files that make up a recipe, so a
# build can be skipped when nothing it depends on changed.
recipe_hash() {
  cat "$@" | sha256sum | cut -c1-16
}
