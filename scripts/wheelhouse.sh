#!/usr/bin/env bash
# The OTA wheelhouse: the release wheel plus every dependency wheel for the devices' platform,
# at the versions constraints.txt pins (what CI tested), ready for
#   edge-gateway ota sign OUT/edge_gateway-VERSION-py3-none-any.whl --deps OUT/deps --key ... --product ...
#
#   scripts/wheelhouse.sh [--out DIR] [--wheel FILE] [--platform TAG] [--python-version X.Y]
#
# Defaults: --out dist, the wheel built from this checkout, 64-bit Raspberry Pi OS (bookworm:
# glibc 2.36, aarch64) and Python 3.11. --platform may be repeated; "native" means this machine.
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$src/dist"
wheel=""
platforms=()
python_version=3.11
python="${PYTHON:-python3}"
die() { echo "wheelhouse.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a folder"; out="$2"; shift ;;
    --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; wheel="$2"; shift ;;
    --platform) [ $# -ge 2 ] || die "--platform needs a tag"; platforms+=("$2"); shift ;;
    --python-version) [ $# -ge 2 ] || die "--python-version needs X.Y"; python_version="$2"; shift ;;
    -h|--help) sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
  shift
done
# pip takes each manylinux tag literally: a glibc 2.36 system accepts every one from 2.17 on.
if [ ${#platforms[@]} -eq 0 ]; then
  for minor in $(seq 17 36); do platforms+=("manylinux_2_${minor}_aarch64"); done
fi
mkdir -p "$out/deps"
if [ -z "$wheel" ]; then
  rm -rf "$src/build"  # setuptools' build folder may hold modules deleted since the last build
  "$python" -m pip wheel -q --no-deps --disable-pip-version-check -w "$out" "$src"
  wheel="$(ls -t "$out"/edge_gateway-*.whl | head -n 1)"
fi
target=()
for platform in "${platforms[@]}"; do
  [ "$platform" = native ] || target+=(--platform "$platform")
done
if [ ${#target[@]} -gt 0 ]; then target+=(--python-version "$python_version"); fi
# Binary wheels only (a Pi builds nothing at update time), every version from constraints.txt.
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: "${target[@]}" \
  -c "$src/constraints.txt" -d "$out/deps" "$wheel"
rm -f "$out/deps/$(basename "$wheel")"  # the release wheel itself is signed on its own
echo "wheel: $wheel"
echo "deps:  $out/deps ($(find "$out/deps" -name '*.whl' | wc -l) wheels, pinned by constraints.txt)"
