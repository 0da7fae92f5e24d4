#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: mosquitto from apt (when missing) and
# a virtualenv in .venv with edge-gateway installed (editable) plus the dependency groups (or
# extras) asked for, e.g. "test,bench".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
# The test set-up (extras containing "test") also needs chromium and systemd tools.
case ",$extras," in *,test,*) testing=1 ;; *) testing=0 ;; esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "==> installing mosquitto (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
# The dashboard's browser tests drive Debian's chromium with playwright (which never downloads a
# browser of its own here); a missing chromium fails them, so the test set-up installs it.
if [ "$testing" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium (apt-get) for the dashboard's browser tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Debian enables the system broker on install; the gateway starts its own, so stop that one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
  as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

# The tests run systemd-analyze (verify, security), systemd-sysusers and systemctl --root on the
# unit and the install script; /bin/kill (procps) is the unit's ExecReload.
if [ "$testing" = 1 ] && { ! command -v systemd-analyze >/dev/null 2>&1 || [ ! -x /bin/kill ]; }; then
  echo "==> installing systemd tools (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd procps >/dev/null
fi

# The metrics tests check the whole exposition with promtool (Debian's prometheus package; its
# service is not wanted here, only the tool).
if [ "$testing" = 1 ] && ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (apt-get prometheus) for the metrics tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "edge-gateway needs Python 3.11 or newer; $python is $("$python" --version)" >&2
  exit 1
fi
if [ ! -x "$root/.venv/bin/python" ]; then
  if ! "$python" -m venv "$root/.venv" 2>/dev/null; then
    echo "==> installing python3-venv (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$root/.venv"
  fi
fi
stamp="$root/.venv/.installed${extras:+-${extras//,/-}}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] \
  || [ "$root/constraints.txt" -nt "$stamp" ]; then
  echo "==> installing edge-gateway into .venv"
  py="$root/.venv/bin/python"
  "$py" -m pip install -q --upgrade pip
  # Dependency groups (the development tools) with pip's --group from 25.1 on, else listed;
  # constraints.txt pins the runtime dependencies (scripts/pip_args.py).
  supported=""
  if "$py" -m pip install --help | grep -q -- '--group'; then supported=--groups-supported; fi
  mapfile -t args < <("$py" "$root/scripts/pip_args.py" "$root" "$extras" $supported)
  "$py" -m pip install -q "${args[@]}"
  touch "$stamp"
fi
