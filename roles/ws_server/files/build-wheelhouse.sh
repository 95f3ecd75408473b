#!/usr/bin/env bash
# build-wheelhouse.sh SOURCE_DIR ARCHIVE PYTHON_VERSION ARCH EXTRAS
# On the controller: the server's wheel plus every dependency as binary wheels
# for the target's Python and architecture, so the target installs with
# `pip install --no-index`, packed as ONE tar archive (ARCHIVE) with its SHA-256
# next to it (ARCHIVE.sha256). One file travels to each host and is compared by
# checksum, instead of a folder compared file by file. When SOURCE_DIR has a
# constraints.txt (the exact lock of the server's runtime dependencies), every
# dependency is downloaded at the version it pins.
# Built in a temporary folder, then renamed, so a half-built archive is never
# taken for a complete one.
set -euo pipefail
source_dir=$(cd "$1" && pwd) archive=$2 python_version=$3 arch=$4 extras=$5
tag=$(echo "$python_version" | cut -d. -f1,2 | tr -d .)   # 3.11.2 -> 311
work=$archive.partial
rm -rf "$work"
mkdir -p "$work/wheels"

python3=${PYTHON:-python3}
command -v "$python3" >/dev/null || python3=python
# Fixed zip times: the same source makes the same wheel, so a rebuilt archive
# (another controller, a cleared cache) has the same checksum and does not travel.
SOURCE_DATE_EPOCH=315532800 "$python3" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$work/wheels" "$source_dir"
wheel=$(ls "$work"/wheels/wsfleet-*.whl)
requirement=$wheel
[ -n "$extras" ] && requirement="$wheel[$extras]"

constraints=()
[ -f "$source_dir/constraints.txt" ] && constraints=(--constraint "$source_dir/constraints.txt")
platforms=()
for glibc in 2_17 2_24 2_28 2_31 2_34 2_35 2_36; do platforms+=(--platform "manylinux_${glibc}_$arch"); done
platforms+=(--platform "manylinux2014_$arch")
download() {
  "$python3" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$python_version" --implementation cp --abi "cp$tag" --abi abi3 --abi none \
    "${platforms[@]}" "${constraints[@]}" --dest "$work/wheels" "$@"
}
download "$requirement"
# pip evaluated the dependencies' markers for the controller's Python; add what
# the target's Python needs on top (a few rounds at most: each adds a layer).
for _ in 1 2 3 4 5; do
  mapfile -t missing < <("$python3" "$(dirname "$0")/complete_wheelhouse.py" "$work/wheels" "$python_version" "$arch" "$extras")
  [ ${#missing[@]} -eq 0 ] && break
  download "${missing[@]}"
done

# The same wheels always make the same bytes (sorted names, fixed times and
# owners), so the checksum changes only when a wheel does.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
  -C "$work/wheels" -cf "$work/wheels.tar" .
(cd "$work" && sha256sum wheels.tar | cut -d' ' -f1 > wheels.tar.sha256)
mkdir -p "$(dirname "$archive")"
mv "$work/wheels.tar.sha256" "$archive.sha256"
mv "$work/wheels.tar" "$archive"
rm -rf "$work"
