#!/usr/bin/env bash
# The full benchmark from a clean clone: set-up (mosquitto, .venv with the bench group and the devcloud extra), then
# python -m bench, which writes bench/results/ and the figures block of BENCHMARKS.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" bench,devcloud  # the dev cloud (aiohttp) is the benchmark's cloud
cd "$root"
exec "$root/.venv/bin/python" -m bench "$@"
