#!/usr/bin/env bash
# Everything the other make targets need, on a fresh Debian/Ubuntu machine, and a
# quick no-op when it is all there already:
#   - host packages (tool chain, redis-server for the server's tests);
#   - the controller virtualenv .venv (requirements.txt and the server package);
#   - a Docker engine (scripts/docker/engine.sh);
#   - base images and offline apt repositories (scripts/images/build.sh).
# `setup.sh host` stops after the virtualenv (what needs no containers).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"

# Host tools. redis-server is only a binary for the server's tests: its service
# is not started (apt_install keeps package scripts from starting daemons).
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
apt_install git make ca-certificates redis-server mmdebstrap dpkg-dev
# promtool (package prometheus, not started) checks and unit-tests the alert rules.
apt_install prometheus

venv=$WSFLEET_ROOT/.venv
stamp=$(recipe_hash requirements.txt $(ls server/pyproject.toml 2>/dev/null) <(python3 --version))
if [ "$(cat "$venv/.wsfleet-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "creating the virtualenv .venv"
  python3 -m venv "$venv"
  # Some pip configurations list find-links folders that do not exist; pip warns
  # once per package about each. Keep its real errors, drop that noise.
  pip_install() { "$venv/bin/pip" install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
  pip_install -r requirements.txt
  [ -f server/pyproject.toml ] && pip_install -e 'server[dev]'
  "$venv/bin/python" -c 'import ansible, molecule, testinfra' || die "the virtualenv is incomplete (see pip's output above)"
  echo "$stamp" > "$venv/.wsfleet-stamp"
else
  log "virtualenv .venv is up to date"
fi

[ "${1:-}" = host ] && exit 0

# The cluster scenario's outside checks: Debian's chromium for the demo page
# (driven by playwright-core, which never downloads a browser) and sslscan.
apt_install chromium sslscan
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
browser_stamp=$(recipe_hash tests/browser/package-lock.json)
if [ "$(cat tests/browser/node_modules/.wsfleet-stamp 2>/dev/null)" != "$browser_stamp" ]; then
  log "installing playwright-core for the browser test"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  echo "$browser_stamp" > tests/browser/node_modules/.wsfleet-stamp
fi

"$WSFLEET_ROOT/scripts/docker/engine.sh" start
"$WSFLEET_ROOT/scripts/images/build.sh"
