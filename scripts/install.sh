#!/usr/bin/env bash
# Install edge-gateway as a systemd service on Raspberry Pi OS (or any Debian with systemd):
#   the edge-gateway system user (gpio and spi as supplementary groups, via the unit),
#   a virtualenv with this checkout installed in /opt/edge-gateway/slots/a (A/B slots for
#   OTA updates; current -> the active slot, venv -> current),
#   /usr/local/bin/edge-gateway, /etc/edge-gateway/gateway.yaml (the example, never overwritten),
#   the unit in /etc/systemd/system, enabled; started when the config checks out.
# Run it again to upgrade: every step is idempotent.
#
#   sudo scripts/install.sh                 install or upgrade, enable, (re)start
#   sudo scripts/install.sh --uninstall     stop, disable, remove the program (config and state stay)
#   sudo scripts/install.sh --uninstall --purge   ... and remove config and state too
#   scripts/install.sh --root DIR           install into DIR as a system root (no apt, no start)
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root=/
uninstall=0
purge=0
start=1
use_apt=1
python=python3
pip_args=""

usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root="$2"; start=0; use_apt=0; shift ;;
    --root=*) root="${1#--root=}"; start=0; use_apt=0 ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    --no-start) start=0 ;;
    --no-apt) use_apt=0 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python="$2"; shift ;;
    --pip-args) [ $# -ge 2 ] || die "--pip-args needs a value"; pip_args="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done
[ "$purge" -eq 0 ] || [ "$uninstall" -eq 1 ] || die "--purge goes with --uninstall"
[ -d "$root" ] || die "--root $root is not a directory"
prefix="$(cd "$root" && pwd)"
prefix="${prefix%/}"  # "" for the real root
if [ -z "$prefix" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root: sudo $0 $*"
fi

name=edge-gateway
opt="$prefix/opt/$name"
etc="$prefix/etc/$name"
unit="$prefix/etc/systemd/system/$name.service"
sysusers="$prefix/etc/sysusers.d/$name.conf"
link="$prefix/usr/local/bin/$name"
state="$prefix/var/lib/$name"

say() { echo "==> $*"; }
sctl() {
  if [ -z "$prefix" ]; then systemctl "$@"; else systemctl --root="$prefix" "$@"; fi
}

if [ "$uninstall" -eq 1 ]; then
  if [ -z "$prefix" ]; then
    systemctl disable --now "$name.service" 2>/dev/null || true
  elif [ -f "$unit" ]; then
    sctl disable "$name.service" >/dev/null 2>&1 || true
  fi
  say "removing the unit, /opt/$name and /usr/local/bin/$name"
  rm -f "$unit" "$link"
  rm -rf "$opt"
  [ -z "$prefix" ] && systemctl daemon-reload
  if [ "$purge" -eq 1 ]; then
    say "removing /etc/$name and /var/lib/$name (the $name system user stays, as Debian does)"
    rm -rf "$etc" "$state" "$sysusers"
  else
    echo "kept: /etc/$name (config, certificates) and /var/lib/$name; --purge removes them"
  fi
  exit 0
fi

if [ "$use_apt" -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
  packages="python3-venv"
  # The Pi's GPIO library, from Raspberry Pi OS (the venv sees system packages).
  apt-cache show python3-lgpio >/dev/null 2>&1 && packages="$packages python3-lgpio"
  say "installing $packages (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
fi

say "system user $name (systemd-sysusers)"
install -D -m 0644 "$src/systemd/$name.sysusers" "$sysusers"
if [ -z "$prefix" ]; then systemd-sysusers "$sysusers"; else systemd-sysusers --root="$prefix" "$sysusers"; fi
gid="$(awk -F: -v n="$name" '$1 == n { print $3 }' "$prefix/etc/group")"
[ -n "$gid" ] || die "group $name was not created"

# A/B slots: the service runs /opt/$name/current (-> slots/a or slots/b); an OTA update installs
# into the other slot and switches the link (docs/updates.md).
slot=a
if [ -L "$opt/current" ]; then slot="$(basename "$(readlink "$opt/current")")"; fi
say "virtualenv /opt/$name/slots/$slot (current)"
if [ -d "$opt/venv" ] && [ ! -L "$opt/venv" ]; then rm -rf "$opt/venv"; fi  # pre-A/B layout
if [ ! -x "$opt/slots/$slot/bin/python" ]; then
  "$python" -m venv --system-site-packages "$opt/slots/$slot"
fi
# shellcheck disable=SC2086  # pip_args is a list of options
"$opt/slots/$slot/bin/python" -m pip install -q --disable-pip-version-check $pip_args "$src"
[ "$(readlink "$opt/current" 2>/dev/null)" = "slots/$slot" ] || ln -sfn "slots/$slot" "$opt/current"
[ "$(readlink "$opt/venv" 2>/dev/null)" = "current" ] || ln -sfn current "$opt/venv"
# The service updates itself (ota.mode: wheel): its group may write the slots and the links.
if [ "$(id -u)" -eq 0 ]; then chgrp -R "$gid" "$opt/slots" "$opt"; fi
chmod 0775 "$opt" "$opt/slots"
chmod -R g+w "$opt/slots"
[ -f "$src/README.md" ] && install -m 0644 "$src/README.md" "$opt/README.md"
install -d "$(dirname "$link")"
ln -sfn "/opt/$name/venv/bin/$name" "$link"

say "config /etc/$name (root:$name, 0750)"
owner() { if [ "$(id -u)" -eq 0 ]; then chown "0:$gid" "$@"; fi; }
install -d -m 0750 "$etc" "$etc/certs"
owner "$etc" "$etc/certs"
if [ ! -f "$etc/gateway.yaml" ]; then
  install -m 0640 "$src/config/gateway.example.yaml" "$etc/gateway.yaml"
  owner "$etc/gateway.yaml"
  echo "new config: edit /etc/$name/gateway.yaml and put the certificates into /etc/$name/certs"
fi

say "unit /etc/systemd/system/$name.service"
install -D -m 0644 "$src/systemd/$name.service" "$unit"
[ -z "$prefix" ] && systemctl daemon-reload
sctl enable "$name.service" >/dev/null 2>&1 || die "systemctl enable $name failed"

if [ "$start" -eq 1 ]; then
  if "$opt/venv/bin/$name" check-config -c "/etc/$name/gateway.yaml"; then
    say "starting $name"
    systemctl restart "$name.service"
    systemctl --no-pager --lines=0 status "$name.service" || true
  else
    echo "not started: fix the config above, then: sudo systemctl start $name"
  fi
fi
say "done"
