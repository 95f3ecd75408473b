#!/usr/bin/env bash
# test.sh [lint]: everything CI runs: lint, playbook syntax, fast tests, then
# every Molecule scenario (`lint` stops after the lints). Each stage reports its
# wall time; the run goes on after a failing stage so one report shows every
# failure, and exits non-zero if any.
#
# After the lints, the work runs in lanes side by side: each background lane
# runs its scenarios in order, the foreground lane everything else in order.
# WSFLEET_BACKGROUND_LANES lists the background lanes, separated by ";"
# (default: `cluster nginx_lb; redis_cluster ws_server`: the two longest
# scenarios, much of which is spent waiting on container boots, SSH round trips,
# failovers and readiness, each with a shorter one after it). Each background
# scenario's output is shown when all lanes end.
# WSFLEET_TEST_LANES=1 runs it all in one lane, in order.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"
export PATH=$WSFLEET_ROOT/.venv/bin:$PATH
# shellcheck disable=SC1091
. .venv/bin/activate   # molecule calls ansible-config from PATH

failures=()
passed=0
report=()
stage() { # stage NAME CMD...: run one stage, time it, remember a failure
  local name=$1 start=$SECONDS
  shift
  log "── $name"
  if "$@"; then
    log "── $name: ok ($((SECONDS - start)) s)"
    passed=$((passed + 1))
    report+=("ok     $((SECONDS - start)) s  $name")
  else
    log "── $name: FAILED ($((SECONDS - start)) s)"
    failures+=("$name")
    report+=("FAILED $((SECONDS - start)) s  $name")
  fi
}

# run_scenario NAME: one Molecule scenario, stopped (and failed) after
# WSFLEET_SCENARIO_TIMEOUT seconds (default 2400): a test that hangs must fail
# its stage, not use up CI's time limit. The next run's destroy step cleans up.
run_scenario() {
  timeout --kill-after=60 "${WSFLEET_SCENARIO_TIMEOUT:-2400}" scripts/molecule.sh test -s "$1"
}

# background_lane LOGDIR SCENARIO...: run these scenarios one after the other in
# the background; each one's output goes to LOGDIR/molecule-SCENARIO.log and its
# outcome ("ok SECONDS" or "FAILED SECONDS") to the same path plus .status.
background_pids=()
background_lane() {
  local logs=$1
  shift
  log "── in the background, in this order: $* (output: $logs/)"
  (
    for scenario in "$@"; do
      start=$SECONDS
      if run_scenario "$scenario" >"$logs/molecule-$scenario.log" 2>&1; then status=ok; else status=FAILED; fi
      echo "$status $((SECONDS - start))" >"$logs/molecule-$scenario.log.status"
    done
  ) &
  background_pids+=($!)
}

# finish_background_lanes LOGDIR SCENARIO...: wait for every lane, show each
# scenario's output and count it.
finish_background_lanes() {
  local logs=$1 scenario status seconds name pid
  shift
  for pid in "${background_pids[@]}"; do wait "$pid" || true; done
  for scenario in "$@"; do
    name="molecule scenario $scenario"
    status=FAILED seconds=?
    [ -r "$logs/molecule-$scenario.log.status" ] && read -r status seconds <"$logs/molecule-$scenario.log.status"
    log "── $name (ran in the background): its output"
    cat "$logs/molecule-$scenario.log" 2>/dev/null
    log "── $name: $status ($seconds s)"
    if [ "$status" = ok ]; then
      passed=$((passed + 1))
      report+=("ok     $seconds s  $name (background lane)")
    else
      failures+=("$name")
      report+=("FAILED $seconds s  $name (background lane)")
    fi
  done
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
scenarios=${WSFLEET_SCENARIOS:-$(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -rn1 basename | sort)}
background=()
lanes=()
if [ "${WSFLEET_TEST_LANES:-2}" -gt 1 ]; then
  IFS=';' read -ra lanes <<<"${WSFLEET_BACKGROUND_LANES:-cluster nginx_lb; redis_cluster ws_server}"
fi
logs=$WSFLEET_ROOT/.cache/test-logs
rm -rf "$logs" && mkdir -p "$logs"
for lane in "${lanes[@]}"; do
  in_lane=()
  for scenario in $lane; do
    grep -qx "$scenario" <<<"$scenarios" || continue
    in_lane+=("$scenario")
    scenarios=$(grep -vx "$scenario" <<<"$scenarios" || true)
  done
  [ ${#in_lane[@]} -gt 0 ] || continue
  background+=("${in_lane[@]}")
  background_lane "$logs" "${in_lane[@]}"
done

stage "playbook syntax" syntax_check
stage "fast tests" fast_tests
# The fast tests ran the server on the websockets that constraints.txt pins (the
# top of the declared range); this runs it on the bottom of that range.
stage "server suite on the lowest websockets" server/tests/run-websockets-range.sh lowest

for scenario in $scenarios; do
  stage "molecule scenario $scenario" run_scenario "$scenario"
done
if [ ${#background[@]} -gt 0 ]; then
  finish_background_lanes "$logs" "${background[@]}"
fi

log "stage times (wall, $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s in all):"
printf '  %s\n' "${report[@]}" >&2
echo "stages: $passed passed, ${#failures[@]} failed"
if [ ${#failures[@]} -gt 0 ]; then
  log "failed stages: ${failures[*]}"
  exit 1
fi
log "every stage passed"
