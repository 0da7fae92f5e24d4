"""``edge-gateway import-batch ZIP_OR_FOLDER [--thing NAME] --ca ca.pem (-c CONFIG | --state-dir
DIR)``: install one thing of a Managed IoT Cloud Thing Batch (App Board's zip) as this gateway's
identity. The work is ``gateway.provisioning.batch``'s; it (and cryptography) is imported only
when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

EXIT_OK = 0


def _state_dir(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """Where the credentials go, and the keys the config sets itself (they win over what is
    imported)."""
    if args.state_dir:
        return Path(args.state_dir).resolve(), []
    if not args.config:
        raise GatewayError("give -c CONFIG or --state-dir DIR (where the credentials go)")
    from gateway.config import load_provision_setup

    setup = load_provision_setup(Path(args.config))
    mqtt = setup.mqtt
    given = {"thing": setup.thing, "mqtt.cert": mqtt.cert, "mqtt.key": mqtt.key, "mqtt.ca": mqtt.ca}
    return setup.state_dir, [key for key, value in given.items() if value is not None]


def cmd_import_batch(args: argparse.Namespace) -> int:
    from gateway.provisioning.batch import import_thing

    state_dir, overriding = _state_dir(args)
    imported = import_thing(
        Path(args.source), state_dir, Path(args.ca), thing=args.thing, force=args.force
    )
    print(f"imported thing {imported.thing!r} from {args.source}")
    print(f"  cert       {imported.cert}")
    print(f"  key        {imported.key} (0600)")
    print(f"  broker CA  {imported.ca}")
    print(f"  assigned   {state_dir / 'provisioned.yaml'}")
    print(
        "the config needs no thing, mqtt.cert, mqtt.key or mqtt.ca now; give mqtt.host "
        f"(the broker's host name) and state_dir: {state_dir}"
    )
    if overriding:
        print(f"note: {args.config} sets {', '.join(overriding)}, which win over the import")
    return EXIT_OK


def add_import_batch_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "import-batch",
        help="install a thing of a Thing Batch zip (Managed IoT Cloud's App Board) as this "
        "gateway's identity",
    )
    parser.add_argument(
        "source", metavar="ZIP_OR_FOLDER", help="the batch zip, or it unpacked (folder per thing)"
    )
    parser.add_argument("--thing", help="the thing (folder name) to install, if there are several")
    parser.add_argument(
        "--ca",
        required=True,
        help="the broker's CA certificate (the guide's ca.pem, downloaded separately)",
    )
    parser.add_argument("-c", "--config", help="gateway config (its state_dir)")
    parser.add_argument("--state-dir", help="where certs/ and provisioned.yaml go")
    parser.add_argument("--force", action="store_true", help="replace an existing certificate")
    parser.set_defaults(handler=cmd_import_batch)
