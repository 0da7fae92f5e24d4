"""Files a command needs at run time, shipped inside the wheel as package data.

The demo's config, the example config, and the systemd unit and sysusers file that
``scripts/install.sh`` installs. In a checkout they are links to ``config/`` and ``systemd/``
(the files people edit); a wheel carries copies. ``python -m gateway.resources NAME`` prints a
file's path, which is how ``install.sh`` finds them in the venv it has just installed.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import GatewayError

DEMO_CONFIG = "demo.yaml"
EXAMPLE_CONFIG = "gateway.example.yaml"
UNIT = "edge-gateway.service"
SYSUSERS = "edge-gateway.sysusers"
NAMES = (DEMO_CONFIG, EXAMPLE_CONFIG, UNIT, SYSUSERS)


def shipped_path(name: str) -> Path:
    """Where a shipped file is, whether or not it is there (a default for ``--help``). Beside
    this module: pip installs the package unzipped (and importlib.resources would cost every
    command its import time for the same answer)."""
    return Path(__file__).with_name(name)


def resource_path(name: str) -> Path:
    """The file system path of a shipped file (the package is installed unzipped, as pip does;
    the config loader resolves relative paths against the file's folder, so it needs one)."""
    if name not in NAMES:
        raise GatewayError(f"no shipped file {name!r} (known: {', '.join(NAMES)})")
    path = shipped_path(name)
    if not path.is_file():
        raise GatewayError(f"{path} is missing: edge-gateway is installed incompletely")
    return path
