#!/usr/bin/env bash
# build-wheelhouse.sh SOURCE_DIR TARGET_DIR PYTHON_VERSION ARCH EXTRAS
# On the controller: the server's wheel plus every dependency as binary wheels
# for the target's Python and architecture, so the target installs with
# `pip install --no-index`. Built into a temporary folder, then renamed, so a
# half-built wheelhouse is never taken for a complete one.
set -euo pipefail
source_dir=$(cd "$1" && pwd) target=$2 python_version=$3 arch=$4 extras=$5
tag=$(echo "$python_version" | cut -d. -f1,2 | tr -d .)   # 3.11.2 -> 311
work=$target.partial
rm -rf "$work"
mkdir -p "$work"

python3=${PYTHON:-python3}
command -v "$python3" >/dev/null || python3=python
"$python3" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$work" "$source_dir"
wheel=$(ls "$work"/wsfleet-*.whl)
requirement=$wheel
[ -n "$extras" ] && requirement="$wheel[$extras]"

platforms=()
for glibc in 2_17 2_24 2_28 2_31 2_34 2_35 2_36; do platforms+=(--platform "manylinux_${glibc}_$arch"); done
platforms+=(--platform "manylinux2014_$arch")
download() {
  "$python3" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$python_version" --implementation cp --abi "cp$tag" --abi abi3 --abi none \
    "${platforms[@]}" --dest "$work" "$@"
}
download "$requirement"
# pip evaluated the dependencies' markers for the controller's Python; add what
# the target's Python needs on top (a few rounds at most: each adds a layer).
for _ in 1 2 3 4 5; do
  mapfile -t missing < <("$python3" "$(dirname "$0")/complete_wheelhouse.py" "$work" "$python_version" "$arch" "$extras")
  [ ${#missing[@]} -eq 0 ] && break
  download "${missing[@]}"
done

touch "$work/.complete"
rm -rf "$target"
mv "$work" "$target"
