#!/usr/bin/env bash
# build.sh [SUITE...]: build what the containers need, for the suites named
# (default: every suite in suites.txt):
#   - the base image localhost/wsfleet/debian:<tag> (mmdebstrap | docker import),
#     rebuilt only when missing or when its recipe changed;
#   - the offline apt repository .cache/apt/<suite>/ with the packages of
#     repo-packages.txt and all their dependencies, rebuilt the same way.
# Suites are built in parallel; each writes its own log under .cache/images/.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

here=$WSFLEET_ROOT/scripts/images
mirror=${WSFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log_dir=$WSFLEET_CACHE/images
mkdir -p "$log_dir" "$WSFLEET_CACHE/apt"

packages_for() { # packages_for FILE SUITE: comma-separated list for mmdebstrap
  awk -v suite="$2" '
    /^[[:space:]]*(#|$)/ { next }
    NF == 1 { print $1; next }
    { for (i = 2; i <= NF; i++) if ($i == suite) print $1 }
  ' "$1" | paste -sd, -
}

# Small images: no documentation, no translations.
slim_options=(
  --variant=minbase
  --aptopt='Acquire::Languages "none"'
  # The archive snapshot reachable here can be older than sid's Release
  # validity window; the signatures are still checked.
  --aptopt='Acquire::Check-Valid-Until "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
)

build_image() { # build_image SUITE TAG
  local suite=$1 tag=$2 image="localhost/wsfleet/debian:$2" recipe current
  recipe=$(recipe_hash "$here/build.sh" "$here/sshd-host-keys.sh" "$here/image-packages.txt" <(echo "$suite $mirror"))
  current=$(docker image inspect -f '{{index .Config.Labels "org.wsfleet.recipe"}}' "$image" 2>/dev/null || true)
  if [ "$current" = "$recipe" ]; then
    log "$image is up to date"
    return 0
  fi
  log "building $image with mmdebstrap"
  # Through a file, not a pipe: a failed bootstrap must never leave an image
  # behind that carries the recipe label.
  local rootfs=$WSFLEET_CACHE/images/$suite.tar
  mmdebstrap "${slim_options[@]}" \
    --include="$(packages_for "$here/image-packages.txt" "$suite")" \
    --customize-hook='rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*; rm -rf "$1"/var/lib/apt/lists/*' \
    --customize-hook='echo wsfleet > "$1"/etc/hostname; : > "$1"/etc/machine-id' \
    --customize-hook="$here/sshd-host-keys.sh" \
    "$suite" "$rootfs" "$mirror"
  docker import \
        --change 'ENV container=docker' \
        --change 'CMD ["/lib/systemd/systemd"]' \
        --change "LABEL org.wsfleet.recipe=$recipe org.wsfleet.suite=$suite" \
        "$rootfs" "$image" >/dev/null
  rm -f "$rootfs"
  # The image this one replaces, if any, is now dangling: remove it.
  docker image prune -f --filter "label=org.wsfleet.suite=$suite" >/dev/null
  log "built $image"
}

build_repo() { # build_repo SUITE
  local suite=$1 repo="$WSFLEET_CACHE/apt/$1" recipe
  recipe=$(recipe_hash "$here/build.sh" "$here/image-packages.txt" "$here/repo-packages.txt" <(echo "$suite $mirror"))
  if [ -f "$repo/Packages.gz" ] && [ "$(cat "$repo/.recipe" 2>/dev/null)" = "$recipe" ]; then
    log "offline repository $suite is up to date"
    return 0
  fi
  log "downloading the offline repository for $suite"
  rm -rf "$repo.new"
  mkdir -p "$repo.new"
  # A throw-away chroot resolves the dependencies against the suite itself; we
  # keep only the .deb files it downloaded.
  mmdebstrap "${slim_options[@]}" \
    --include="$(packages_for "$here/image-packages.txt" "$suite"),$(packages_for "$here/repo-packages.txt" "$suite")" \
    --skip=download/empty \
    --customize-hook="sync-out /var/cache/apt/archives $repo.new" \
    "$suite" /dev/null "$mirror"
  rm -rf "$repo.new/partial" "$repo.new/lock"
  (cd "$repo.new" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null | gzip -9 > Packages.gz)
  echo "$recipe" > "$repo.new/.recipe"
  rm -rf "$repo"
  mv "$repo.new" "$repo"
  log "offline repository $suite: $(ls "$repo"/*.deb | wc -l) packages"
}

build_suite() { # build_suite SUITE TAG
  build_image "$1" "$2"
  build_repo "$1"
}

apt_install mmdebstrap dpkg-dev
pids=()
names=()
while read -r suite tag; do
  case "$suite" in ''|'#'*) continue ;; esac
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$suite"; then continue; fi
  build_suite "$suite" "$tag" >"$log_dir/$suite.log" 2>&1 &
  pids+=($!)
  names+=("$suite")
done < "$here/suites.txt"

failed=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then
    grep -h '\[wsfleet\]' "$log_dir/${names[$i]}.log" >&2 || true
  else
    failed=1
    log "building ${names[$i]} failed; last lines of $log_dir/${names[$i]}.log:"
    tail -n 25 "$log_dir/${names[$i]}.log" >&2
  fi
done
exit $failed
