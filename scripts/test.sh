#!/usr/bin/env bash
# test.sh [lint]: everything CI runs, in order: lint, playbook syntax, fast
# tests, then every Molecule scenario (`lint` stops after the lints). Each stage reports its wall time; the run goes on after a
# failing scenario so one report shows every failure, and exits non-zero if any.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"
export PATH=$WSFLEET_ROOT/.venv/bin:$PATH
# shellcheck disable=SC1091
. .venv/bin/activate   # molecule calls ansible-config from PATH

failures=()
passed=0
stage() { # stage NAME CMD...: run one stage, time it, remember a failure
  local name=$1 start=$SECONDS
  shift
  log "── $name"
  if "$@"; then
    log "── $name: ok ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    log "── $name: FAILED ($((SECONDS - start)) s)"
    failures+=("$name")
  fi
}

lint_python() {
  ruff check . && ruff format --check . || return 1
  [ -d server/src ] || return 0
  (cd server && ruff check . && ruff format --check . && mypy)
}

syntax_check() {
  local playbook status=0
  for playbook in playbooks/*.yml; do
    [ -e "$playbook" ] || continue
    ansible-playbook --syntax-check "$playbook" >/dev/null || { echo "syntax error in $playbook"; status=1; }
  done
  return $status
}

fast_tests() {
  # Two suites with their own settings: the project's (pytest.ini) and the
  # server's (server/pyproject.toml).
  pytest -q tests || return 1
  [ -d server/tests ] || return 0
  (cd server && pytest -q)
}

stage "yamllint" yamllint --strict .
stage "ansible-lint (production profile)" ansible-lint
stage "ruff and mypy" lint_python
if [ "${1:-}" = lint ]; then
  [ ${#failures[@]} -eq 0 ] || { log "failed stages: ${failures[*]}"; exit 1; }
  exit 0
fi
stage "playbook syntax" syntax_check
stage "fast tests" fast_tests
# The fast tests ran the server on the websockets that constraints.txt pins (the
# top of the declared range); this runs it on the bottom of that range.
stage "server suite on the lowest websockets" server/tests/run-websockets-range.sh lowest

scenarios=${WSFLEET_SCENARIOS:-$(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -rn1 basename | sort)}
for scenario in $scenarios; do
  stage "molecule scenario $scenario" scripts/molecule.sh test -s "$scenario"
done

echo "stages: $passed passed, ${#failures[@]} failed"
if [ ${#failures[@]} -gt 0 ]; then
  log "failed stages: ${failures[*]}"
  exit 1
fi
log "every stage passed"
