#!/usr/bin/env bash
# setup.sh [host|lab|all]: what the other make targets need, on a fresh
# Debian/Ubuntu machine, and a quick no-op when it is all there already.
#   host  host tools and the controller virtualenv .venv (what needs no containers)
#   lab   what `make lab` needs: .venv, a Docker engine, and the trixie image and
#         offline repository only (no browser, no other suites); the virtualenv
#         and the image are made at the same time
#   all   (default) what `make test` needs: all of the above, every suite's image
#         and repository, and the cluster scenario's outside checks (Chromium,
#         sslscan, playwright-core)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"
mode=${1:-all}
case $mode in host|lab|all) ;; *) die "usage: $0 [host|lab|all]" ;; esac

# The lab's one suite (scripts/lab.sh runs every lab host on it).
lab_suite=trixie

# Host packages, in one apt run: redis-server is only a binary for the server's
# tests (its service is not started: apt_install keeps package scripts from
# starting daemons); mmdebstrap and dpkg-dev build the images and repositories;
# docker.io only when no engine answers and none is installed.
host_packages=(git make ca-certificates openssh-client)
python3 -c 'import ensurepip, venv' 2>/dev/null || host_packages+=(python3-venv)
[ "$mode" = lab ] || host_packages+=(redis-server)
if [ "$mode" != host ]; then
  host_packages+=(mmdebstrap dpkg-dev)
  docker info >/dev/null 2>&1 || command -v dockerd >/dev/null 2>&1 || host_packages+=(docker.io)
fi
[ "$mode" = all ] && host_packages+=(chromium sslscan)
# promtool (package prometheus, its service not started) checks and unit-tests
# the alert rules in the fast tests.
[ "$mode" = all ] && host_packages+=(prometheus)
[ "$mode" = all ] && ! command -v npm >/dev/null 2>&1 && host_packages+=(nodejs npm)
apt_install "${host_packages[@]}"

make_venv() {
  local venv=$WSFLEET_ROOT/.venv stamp
  stamp=$(recipe_hash requirements.txt $(ls server/pyproject.toml server/constraints.txt 2>/dev/null) <(python3 --version))
  if [ "$(cat "$venv/.wsfleet-stamp" 2>/dev/null)" = "$stamp" ]; then
    log "virtualenv .venv is up to date"
    return 0
  fi
  log "creating the virtualenv .venv"
  python3 -m venv "$venv"
  # Some pip configurations list find-links folders that do not exist; pip warns
  # once per package about each. Keep its real errors, drop that noise.
  pip_install() { "$venv/bin/pip" install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
  pip_install -r requirements.txt
  [ -f server/pyproject.toml ] && pip_install -c server/constraints.txt -e 'server[dev]'
  "$venv/bin/python" -c 'import ansible, molecule, testinfra' || die "the virtualenv is incomplete (see pip's output above)"
  echo "$stamp" > "$venv/.wsfleet-stamp"
  log "virtualenv .venv is ready"
}

if [ "$mode" = host ]; then
  make_venv
  exit 0
fi

if [ "$mode" = all ]; then
  # The cluster scenario's outside checks: Debian's chromium for the demo page
  # (driven by playwright-core, which never downloads a browser) and sslscan.
  browser_stamp=$(recipe_hash tests/browser/package-lock.json)
  if [ "$(cat tests/browser/node_modules/.wsfleet-stamp 2>/dev/null)" != "$browser_stamp" ]; then
    log "installing playwright-core for the browser test"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    echo "$browser_stamp" > tests/browser/node_modules/.wsfleet-stamp
  fi
fi

"$WSFLEET_ROOT/scripts/docker/engine.sh" start
# The images and repositories download from Debian's archive while pip
# downloads from PyPI: two independent waits, side by side.
suites=()
[ "$mode" = lab ] && suites=("$lab_suite")
"$WSFLEET_ROOT/scripts/images/build.sh" "${suites[@]}" &
images=$!
make_venv
wait "$images" || die "building the images failed (logs: $WSFLEET_CACHE/images/)"
