#!/usr/bin/env bash
# Run the server's test suite against the lowest and the highest websockets of the
# range server/pyproject.toml declares, each in a throw-away virtualenv.
#
#   server/tests/run-websockets-range.sh            # both ends of the range
#   server/tests/run-websockets-range.sh lowest     # the lower bound only (make test:
#                                                   # the suite already runs on the pinned one)
#   server/tests/run-websockets-range.sh 17.2       # one given version
#
# Every other dependency is the pinned one (server/constraints.txt, and the
# project's requirements.txt for pytest); only websockets changes. The lowest is
# the range's lower bound; the highest is the version constraints.txt pins (the
# one shipped), which must lie inside the range. Needs redis-server on PATH (as the
# suite does) and network access to PyPI (or the configured mirror).
set -euo pipefail

server=$(cd "$(dirname "$0")/.." && pwd)
project=$(dirname "$server")
python=${PYTHON:-python3}

# "websockets>=17.0,<18" in pyproject.toml -> lowest 17.0 (write the lower bound as
# the exact release, e.g. 17.0 rather than 17), upper bound 18.
declared=$(grep -Eo '"websockets>=[0-9.]+,<[0-9.]+"' "$server/pyproject.toml" | tr -d '"') || {
  echo "run-websockets-range: no \"websockets>=X,<Y\" dependency in server/pyproject.toml" >&2
  exit 2
}
lowest=${declared#websockets>=}
lowest=${lowest%%,*}
pinned=$(sed -n 's/^websockets==\([0-9.]*\).*/\1/p' "$server/constraints.txt")
[ -n "$pinned" ] || { echo "run-websockets-range: websockets is not pinned in constraints.txt" >&2; exit 2; }
if [ $# -gt 0 ]; then versions=("${@/#lowest/$lowest}"); else versions=("$lowest" "$pinned"); fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wsfleet-ws-range.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The server's pins with websockets left out (it is given on the command line).
grep -v '^websockets==' "$server/constraints.txt" > "$work/constraints.txt"
grep -E '^(pytest|hypothesis|pytest-asyncio)==' "$project/requirements.txt" >> "$work/constraints.txt" || true

status=0
for version in "${versions[@]}"; do
  echo "== websockets $version ($declared; shipped: $pinned)"
  venv="$work/venv-$version"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$work/constraints.txt" \
    "websockets==$version" "$server[fast]" pytest pytest-asyncio hypothesis
  installed=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("websockets"))')
  [ "$installed" = "$version" ] || { echo "installed websockets $installed, not $version" >&2; exit 1; }
  # The installed package is tested (not server/src): run from a copy of the tests.
  cp -r "$server/tests" "$work/tests-$version"
  cp "$server/pyproject.toml" "$work/pyproject.toml"
  if (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "tests-$version"); then
    echo "== websockets $version: passed"
  else
    echo "== websockets $version: FAILED" >&2
    status=1
  fi
done
exit $status
