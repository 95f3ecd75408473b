#!/usr/bin/env bash
# image.sh: build the server's OCI image, localhost/wsfleet/server:<version>
# (and :latest), from the locally built Debian base (localhost/wsfleet/debian:13,
# scripts/images/build.sh) and the same wheelhouse as the ws_server role
# (roles/ws_server/files/build-wheelhouse.sh). No registry, no network in the
# build: python3-venv comes from the offline apt repository, the server from the
# wheelhouse. The image runs as an unprivileged user (uid 10001) with the
# server as PID 1: `docker stop` (SIGTERM, the default stop signal) drains it; give it a stop timeout
# above drain_spread + drain_timeout (defaults 5 + 30 s), e.g.
#   docker run --stop-timeout 45 -e WSFLEET_REDIS_URL=redis://user@host:6379/0 \
#     -e WSFLEET_REDIS_PASSWORD=... -p 127.0.0.1:8000:8000 localhost/wsfleet/server
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$WSFLEET_ROOT"

suite=trixie
base=${WSFLEET_IMAGE_BASE:-localhost/wsfleet/debian:13}
name=${WSFLEET_IMAGE_NAME:-localhost/wsfleet/server}
extras=fast
apt_repo=$WSFLEET_CACHE/apt/$suite
docker image inspect "$base" >/dev/null 2>&1 || die "no $base image: run make setup first"
[ -f "$apt_repo/Packages.gz" ] || die "no offline apt repository in $apt_repo: run make setup first"

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' server/pyproject.toml | head -n 1)
read -r python_version arch < <(docker run --rm --network none --entrypoint python3 "$base" \
  -c 'import platform; print(platform.python_version(), platform.machine())')

work=$(mktemp -d)
builder=wsfleet-image-build-$$
cleanup() { docker rm -f "$builder" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# The role's wheelhouse builder: a folder of wheels, or one archive of them
# (both forms are accepted, so this follows the role's build entry point).
log "building the wheelhouse for Python $python_version ($arch)"
PYTHON=${PYTHON:-$WSFLEET_ROOT/.venv/bin/python} \
  roles/ws_server/files/build-wheelhouse.sh server "$work/wheelhouse" "$python_version" "$arch" "$extras"
mkdir -p "$work/wheels"
if [ -d "$work/wheelhouse" ]; then
  cp "$work/wheelhouse"/*.whl "$work/wheels/"
else
  tar -xf "$work/wheelhouse" -C "$work/wheels"
fi

log "installing the server into $base"
docker run -d --name "$builder" --network none --entrypoint sleep \
  -v "$apt_repo:/srv/wsfleet-apt:ro" -v "$work/wheels:/srv/wheels:ro" "$base" infinity >/dev/null
docker exec "$builder" bash -euo pipefail -c "
  echo 'deb [trusted=yes] file:/srv/wsfleet-apt ./' > /etc/apt/sources.list.d/wsfleet-offline.list
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  python3 -m venv /opt/wsfleet
  /opt/wsfleet/bin/pip install --quiet --no-index --disable-pip-version-check --find-links /srv/wheels 'wsfleet[$extras]'
  /opt/wsfleet/bin/wsfleet --version
  groupadd --gid 10001 wsfleet
  useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin wsfleet
  rm -f /etc/apt/sources.list.d/wsfleet-offline.list
  apt-get clean
  rm -rf /var/lib/apt/lists/* /root/.cache
"
docker stop -t 1 "$builder" >/dev/null

docker commit \
  --change 'USER 10001:10001' \
  --change 'WORKDIR /' \
  --change 'ENV PATH=/opt/wsfleet/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 WSFLEET_HOST=0.0.0.0 WSFLEET_PORT=8000 WSFLEET_LOG_FORMAT=json' \
  --change 'EXPOSE 8000' \
  --change 'ENTRYPOINT ["/opt/wsfleet/bin/wsfleet"]' \
  --change 'CMD ["serve"]' \
  --change "LABEL org.opencontainers.image.title=wsfleet org.opencontainers.image.version=$version" \
  "$builder" "$name:$version" >/dev/null
docker tag "$name:$version" "$name:latest"
log "built $name:$version (and :latest), $(docker image inspect -f "{{.Size}}" "$name:$version" | numfmt --to=iec)B"
