#!/usr/bin/env bash
# The demo: local dev cloud (mosquitto + shadow service) and a gateway on mock GPIO.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" devcloud
cd "$root"
exec "$root/.venv/bin/edge-gateway" demo "$@"
