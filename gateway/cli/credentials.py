"""``edge-gateway credentials``: the gateway's temporary AWS credentials for local programs.

Prints the ``credential_process`` JSON (``Version: 1``, ``AccessKeyId``, ``SecretAccessKey``,
``SessionToken``, ``Expiration``), so an AWS profile with ``credential_process =
edge-gateway credentials -c /etc/edge-gateway/gateway.yaml`` gives ``aws`` and boto3 the
gateway's credentials. They come from ``state_dir/aws-credentials.json`` when this user may read
it, else from the running daemon through its admin socket (``-c``'s, or the options', or
``$EDGE_GATEWAY_SOCKET``, or the service's defaults). Without valid credentials it prints
one line to stderr and exits 1 (the SDKs show that line).

Light on purpose (an SDK may run it for every client it builds): no asyncio, no aiohttp, no
cryptography; only the config loader, the stored file and the admin socket's client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from gateway.errors import AdminError
from gateway.exitcodes import EXIT_OK, EXIT_RUNTIME

# As the daemon: credentials are handed out only while valid this much longer.
SERVE_MARGIN_S = 30.0


def add_credentials_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "credentials",
        help="print the gateway's temporary AWS credentials as credential_process JSON",
    )
    parser.add_argument("-c", "--config", help="the gateway's config file")
    parser.add_argument("--state-dir", help="the gateway's state folder (instead of -c)")
    parser.add_argument("--socket", help="the daemon's admin socket (instead of -c)")
    parser.set_defaults(handler=cmd_credentials)


def _locations(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The state folders and admin sockets to try, from the options (or the config)."""
    state_dirs = [Path(args.state_dir)] if args.state_dir else []
    sockets = [Path(args.socket)] if args.socket else []
    if args.config:
        from gateway.cli import locate
        from gateway.config import load_config

        config = load_config(Path(args.config), check_files=False)
        state_dirs = state_dirs or locate.state_dirs(config)
        sockets = sockets or locate.admin_sockets(config)
    elif not sockets and (env := os.environ.get("EDGE_GATEWAY_SOCKET")):
        sockets = [Path(env)]
    if not state_dirs and not sockets:
        # Nothing named: where a config without state_dir/admin_socket puts them, for this
        # user, then for the service.
        from gateway.cli import locate
        from gateway.paths import default_admin_socket, default_state_dir

        state_dirs = list(dict.fromkeys([default_state_dir(), locate.SERVICE_STATE_DIR]))
        sockets = list(dict.fromkeys([default_admin_socket(), locate.SERVICE_SOCKET]))
    return state_dirs, sockets


def _from_file(state_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The stored credentials if valid, else None and why."""
    from gateway.credentials import store
    from gateway.credentials.model import CredentialsError

    path = store.credentials_path(state_dir)
    try:
        creds = store.load(path)
    except CredentialsError as exc:
        return None, str(exc)
    if creds is None:
        return None, f"no credentials in {path}"
    if not creds.valid_at(time.time(), SERVE_MARGIN_S):
        return None, f"the credentials in {path} expired at {creds.expiration_iso}"
    return creds.credential_process(), ""


def _from_daemon(socket: Path) -> tuple[dict[str, Any] | None, str]:
    from gateway.ops.adminclient import request

    try:
        reply = request(socket, {"cmd": "credentials"})
    except AdminError as exc:
        return None, str(exc)
    creds = reply.get("credentials")
    if not isinstance(creds, dict) or creds.get("Version") != 1:
        return None, f"the gateway at {socket} sent no credentials"
    return creds, ""


def cmd_credentials(args: argparse.Namespace) -> int:
    state_dirs, sockets = _locations(args)
    reasons: list[str] = []
    answers: list[Callable[[], tuple[dict[str, Any] | None, str]]] = []
    answers += [partial(_from_file, state_dir) for state_dir in state_dirs]
    answers += [partial(_from_daemon, socket) for socket in sockets]
    for answer in answers:  # the file first: it needs no daemon
        creds, why = answer()
        if creds is not None:
            print(json.dumps(creds))
            return EXIT_OK
        reasons.append(why)
    print(f"edge-gateway: no valid AWS credentials: {'; '.join(reasons)}", file=sys.stderr)
    return EXIT_RUNTIME
