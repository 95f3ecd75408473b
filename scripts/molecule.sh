#!/usr/bin/env bash
# molecule.sh ARGS...: run molecule from the project root, inside the virtualenv
# (molecule calls ansible-config from PATH), with WSFLEET_CACHE exported for the
# scenarios' volume paths (offline apt repositories).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"
# shellcheck disable=SC1091
. .venv/bin/activate
exec molecule "$@"
