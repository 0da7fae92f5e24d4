"""The ``edge-gateway`` command line. Exit codes (``gateway.exitcodes``): 0 ok, 1 runtime failure,
2 bad config or usage, 75 (EX_TEMPFAIL) "restart me" after an update; the systemd unit restarts
on 1 and 75."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.cli.text import plural
from gateway.errors import GatewayError
from gateway.exitcodes import EXIT_OK, EXIT_RUNTIME
from gateway.paths import default_admin_socket, default_config_path

if TYPE_CHECKING:  # argparse and json are imported where used: --version needs neither
    import argparse
    from collections.abc import Callable, Sequence

SYSTEM_SOCKET = Path("/run/edge-gateway/admin.sock")
CONFIG_HELP = "YAML config file (or set $EDGE_GATEWAY_CONFIG)"


def demo_dir() -> Path:
    """Where ``edge-gateway demo`` keeps its dev cloud, certificates and admin socket."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "edge-gateway" / "demo"


def _default_demo_config() -> Path:
    """The demo config shipped in the package (a link to config/demo.yaml in a checkout)."""
    from gateway.resources import DEMO_CONFIG, shipped_path

    return shipped_path(DEMO_CONFIG)


def _socket_path(args: argparse.Namespace) -> Path:
    """The admin socket: --socket, then -c's config, then $EDGE_GATEWAY_SOCKET, then the
    system service's socket, then the demo's; the first one that exists wins."""
    if args.socket:
        return Path(args.socket)
    if args.config:
        from gateway.cli.locate import admin_sockets, first_existing
        from gateway.config import load_config

        return first_existing(admin_sockets(load_config(Path(args.config), check_files=False)))
    candidates = [Path(p) for p in [os.environ.get("EDGE_GATEWAY_SOCKET")] if p]
    candidates += [SYSTEM_SOCKET, default_admin_socket(), demo_dir() / "admin.sock"]
    return next((path for path in candidates if path.exists()), candidates[0])


def _parse_value(text: str) -> Any:
    """A command-line value as JSON (true, 0.5, [1,0,0]) or else as a plain string."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.cli.checkconfig import check_config

    return check_config(Path(args.config), files=not args.no_files)


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config, load_provision_setup
    from gateway.core.values import codec_for
    from gateway.ops.logs import configure_logging

    setup = load_provision_setup(Path(args.config))
    # Once, from the same logging section the full config has (provisioned.yaml adds none).
    configure_logging(setup.logging.format, setup.logging.level)
    from gateway.cli.preflight import check_folders

    check_folders(Path(args.config), setup.state_dir)  # before provisioning writes there
    if setup.needs_provisioning:
        # First start with a provision: block: obtain the certificate, then load the config
        # (provisioned.yaml completes it with the thing, endpoint and credentials).
        from gateway.provisioning.provision import provision_at_start

        code = _run_async(provision_at_start(setup))
        if code != EXIT_OK:
            return code
    config = load_config(Path(args.config), codec_for=codec_for)
    check_folders(Path(args.config), config.state_dir, config.admin_socket)
    import structlog

    from gateway.app import run_gateway

    # Bound here, outside the loop, so even the last line after asyncio.run names the thing.
    structlog.contextvars.bind_contextvars(thing=config.thing)

    return _run_async(
        run_gateway(config, mock_gpio=args.mock_gpio, config_path=Path(args.config).resolve())
    )


def _run_async(coro: Any) -> int:
    import structlog

    code = EXIT_OK
    try:
        import asyncio  # here, so the light commands (--version, status) never load it

        result = asyncio.run(coro)
        if isinstance(result, int):
            code = result  # run_gateway: EXIT_RESTART_FOR_UPDATE after an update
    except* GatewayError as group:
        from gateway.ops.logs import logs_to_journal

        for exc in group.exceptions:
            structlog.get_logger().error("gateway_failed", error=str(exc))
            if not logs_to_journal():  # under systemd stderr is the journal too: once is enough
                print(f"edge-gateway: {exc}", file=sys.stderr)
        code = EXIT_RUNTIME
    return code


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from gateway.ops.adminclient import request

    reply = request(_socket_path(args), {"cmd": "status"})
    reply.pop("ok", None)
    if args.json or not sys.stdout.isatty():
        print(json.dumps(reply, indent=2, sort_keys=True))
        return EXIT_OK
    print("\n".join(status_lines(reply)))
    return EXIT_OK


def status_lines(reply: dict[str, Any]) -> list[str]:
    """``edge-gateway status`` for a person: the shadow's line when it runs (else the clouds
    that do), the gateway, its health, one line per other link, then every device."""
    import json

    links = reply.get("links") or {}
    if "thing" in reply:  # the AWS IoT Device Shadow link runs
        state = "connected" if reply.get("connected") else "disconnected"
        synced = ", synced" if reply.get("synced") else ""
        version = reply.get("shadow_version")
        lines = [f"thing {reply.get('thing')}: {state}{synced}, shadow version {version}"]
    else:
        lines = [f"no AWS IoT shadow; clouds: {', '.join(sorted(links)) or 'none'}"]
    lines.append(f"gateway {reply.get('version')}, mock GPIO: {reply.get('mock_gpio')}")
    if reply.get("device_id") is not None:  # check-in identity (getCerts' id and accountId)
        lines.append(f"check-in id {reply['device_id']}, account {reply.get('account_id') or '-'}")
    lines.append(_health_line(reply))
    ota = reply.get("ota") or {}
    if ota.get("state") not in (None, "idle"):
        error = f": {ota['error']}" if ota.get("error") else ""
        lines.append(f"update {ota.get('version')}: {ota['state']}{error}")
    lines += [_link_line(name, link) for name, link in sorted(links.items())]
    for name, value in sorted(reply.get("devices", {}).items()):
        error = reply.get("errors", {}).get(name)
        lines.append(f"  {name:<16} {json.dumps(value)}" + (f"   error: {error}" if error else ""))
    return lines


def _link_line(name: str, link: dict[str, Any]) -> str:
    """One cloud link beside the shadow (``links`` in the status), on one line."""
    parts = ["connected" if link.get("connected") else "disconnected"]
    labels = (
        ("udid", "udid"),  # THiNX
        ("last_checkin", "last check-in"),
        ("status", "status"),
        ("client_id", "client id"),  # MindConnect
        ("points_sent", "points sent"),
        ("queue_depth", "waiting"),
    )
    parts += [f"{label} {link[key]}" for key, label in labels if link.get(key) is not None]
    if link.get("commands_executed") or link.get("commands_failed"):
        parts.append(
            f"commands executed {link.get('commands_executed', 0)}"
            f" / failed {link.get('commands_failed', 0)}"
        )
    if link.get("reconnects"):
        parts.append(f"reconnects {link['reconnects']}")
    if link.get("checkin_error"):
        parts.append(f"error: {link['checkin_error']}")
    return f"{name}: " + ", ".join(parts)


def _health_line(reply: dict[str, Any]) -> str:
    """The figures the metrics endpoint exports, on one line (the shadow's own figures only
    when the shadow link runs; the other links have theirs on their own lines)."""
    shadow = "thing" in reply
    counters = reply.get("counters", {})
    parts = ["healthy" if reply.get("healthy") else "UNHEALTHY"]
    if shadow:
        parts += [
            f"reconnects {reply.get('reconnects', 0)}",
            f"deltas applied {counters.get('deltas_applied', 0)}"
            f" / rejected {counters.get('deltas_rejected', 0)}",
        ]
    for key, label in (("outbox_depth", "outbox"), ("last_checkin", "last check-in")):
        if reply.get(key) is not None and (shadow or key != "outbox_depth"):
            parts.append(f"{label} {reply[key]}")
    days = reply.get("certificate_days_left")
    if days is not None:
        parts.append(f"certificate {plural(round(days), 'day')} left")
    elif shadow:
        parts.append("certificate unreadable")
    return ", ".join(parts)


def cmd_mock_set(args: argparse.Namespace) -> int:
    import json

    from gateway.ops.adminclient import request

    value = _parse_value(args.value)
    request(_socket_path(args), {"cmd": "mock_set", "name": args.name, "value": value})
    print(f"{args.name} = {json.dumps(value)}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo import run_demo

    return run_demo(
        workdir=Path(args.workdir) if args.workdir else demo_dir(),
        config=Path(args.config),
        http=_address(args.http, 8080) if args.http else None,
        check=args.check,
    )


def devcloud_dir() -> Path:
    """Where ``edge-gateway devcloud`` keeps its state unless ``--state-dir`` says otherwise."""
    return demo_dir().parent / "devcloud"


def _address(text: str, default_port: int) -> tuple[str, int]:
    from gateway.devcloud.web.cloud import parse_address

    try:
        return parse_address(text, default_port)
    except ValueError as exc:
        raise GatewayError(f"invalid address {text!r}: expected HOST:PORT") from exc


def cmd_devcloud(args: argparse.Namespace) -> int:
    from gateway.devcloud.web.run import parse_claims, run_devcloud

    return run_devcloud(
        state_dir=Path(args.state_dir) if args.state_dir else devcloud_dir(),
        things=args.things,
        http=_address(args.http, 8080),
        https=_address(args.https, 8443),
        mqtt_port=args.mqtt_port,
        claims=parse_claims(args.claim),
        fleet_templates=parse_claims(args.fleet_template),
        fleet_claims=args.fleet_claim,
        mindconnect=(args.mindconnect_tenant, args.mindconnect_shape),
    )


def cmd_desired(args: argparse.Namespace) -> int:
    from gateway.cli.desired import set_desired
    from gateway.cli.extras import require

    require("aiohttp")  # the dev cloud's client: say which extra is missing before anything

    workdir = Path(args.workdir) if args.workdir else demo_dir()
    config = Path(args.config) if args.config else None
    return set_desired(workdir, args.assignments, show=args.show, thing=args.thing, config=config)


def _add_socket_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="the daemon's config file (to find its socket)")
    parser.add_argument("--socket", help="path of the daemon's admin socket")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` (a name in ``COMMANDS``), the same top level
    with that command alone registered. ``main`` parses with the latter when the arguments
    start with a command's name, so ``status`` builds its own parser and not thirty: the
    command's help, errors and parsed arguments are the same either way."""
    import argparse

    from gateway.cli.helpformat import finish_parser

    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Keep Raspberry Pi GPIO devices in sync with your clouds: an AWS IoT Device "
        "Shadow, THiNX, Siemens Insights Hub (MindConnect MQTT).",
    )
    parser.add_argument("--version", action="version", version=f"edge-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, register in COMMANDS.items():
        if command is None or command == name:
            register(commands)
    return finish_parser(parser)  # a description and the defaults in every --help


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="run the gateway daemon")
    run.add_argument("-c", "--config", default=str(default_config_path()), help=CONFIG_HELP)
    run.add_argument("--mock-gpio", action="store_true", help="use gpiozero's mock pins")
    run.set_defaults(handler=cmd_run)


def _add_check_config(commands: Any) -> None:
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("-c", "--config", default=str(default_config_path()), help=CONFIG_HELP)
    check.add_argument(
        "--no-files",
        action="store_true",
        help="check the structure only, not the certificate and key files (e.g. on a laptop)",
    )
    check.set_defaults(handler=cmd_check_config)


def _add_status(commands: Any) -> None:
    status = commands.add_parser("status", help="show the state of a running gateway")
    _add_socket_options(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)


def _add_mock(commands: Any) -> None:
    mock = commands.add_parser("mock", help="drive mock inputs of a gateway on mock GPIO")
    mock_commands = mock.add_subparsers(dest="mock_command", required=True, metavar="ACTION")
    mock_set = mock_commands.add_parser("set", help="set a mock input, e.g. 'mock set button true'")
    mock_set.add_argument("name", help="device name from the config")
    mock_set.add_argument("value", help="value as JSON: true, false, 0.5, 42.0")
    _add_socket_options(mock_set)
    mock_set.set_defaults(handler=cmd_mock_set)


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="run the local dev cloud and a mock-GPIO gateway (needs mosquitto)"
    )
    demo.add_argument("-c", "--config", default=str(_default_demo_config()), help="gateway config")
    demo.add_argument("--workdir", help=f"state folder (default {demo_dir()})")
    demo.add_argument(
        "--http", help="dashboard address HOST:PORT (default 127.0.0.1:8080, or a free port)"
    )
    demo.add_argument(
        "--check", action="store_true", help="smoke test: sync, one round trip, then stop"
    )
    demo.set_defaults(handler=cmd_demo)


def _add_devcloud(commands: Any) -> None:
    devcloud = commands.add_parser(
        "devcloud",
        help="run the local dev cloud: broker, shadows, dashboard, Provision API (needs mosquitto)",
    )
    devcloud.add_argument(
        "--things", type=int, default=0, metavar="N", help="create a batch of N things"
    )
    devcloud.add_argument(
        "--http", default="127.0.0.1:8080", help="dashboard address (plain HTTP; keep it loopback)"
    )
    devcloud.add_argument("--https", default="127.0.0.1:8443", help="Provision API address")
    devcloud.add_argument("--mqtt-port", type=int, default=8883, help="broker port (0: any free)")
    devcloud.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="ID[=THING]",
        help="a claim id /provision/getCerts accepts (repeatable; also claims.json)",
    )
    devcloud.add_argument(
        "--fleet-template",
        action="append",
        default=[],
        metavar="NAME=THING",
        help="a fleet-provisioning template, e.g. pi=pi-{SerialNumber} (also templates.json)",
    )
    devcloud.add_argument(
        "--fleet-claim",
        action="append",
        default=[],
        metavar="NAME",
        help="issue a claim certificate into DIR/claims/NAME/ for fleet provisioning",
    )
    devcloud.add_argument(
        "--mindconnect-tenant", default="devtenant", help="the MindConnect side's tenant name"
    )
    devcloud.add_argument(
        "--mindconnect-shape",
        choices=("documentation", "sample"),
        default="documentation",
        help="agentCertificates answer fields: Siemens' documentation's or its sample's",
    )
    devcloud.add_argument("--state-dir", help=f"state folder (default {devcloud_dir()})")
    devcloud.set_defaults(handler=cmd_devcloud)


def _add_desired(commands: Any) -> None:
    desired = commands.add_parser(
        "desired", help="set desired state of the demo's thing (as the cloud app would)"
    )
    desired.add_argument("assignments", nargs="*", metavar="NAME=VALUE", help="e.g. led=true")
    desired.add_argument("--show", action="store_true", help="print the shadow document")
    desired.add_argument("--workdir", help=f"the demo's state folder (default {demo_dir()})")
    desired.add_argument("--thing", help="the thing (for a 'devcloud' folder; default: the demo's)")
    desired.add_argument(
        "-c", "--config", help="the thing's gateway config, to refuse bad values before sending"
    )
    desired.set_defaults(handler=cmd_desired)


def _add_config(commands: Any) -> None:
    from gateway.cli.configcmd import add_config_parser

    add_config_parser(commands)


def _add_provision(commands: Any) -> None:
    from gateway.cli.certs import add_provision_parser

    add_provision_parser(commands)


def _add_certs(commands: Any) -> None:
    from gateway.cli.certs import add_certs_parser

    add_certs_parser(commands)


def _add_import_batch(commands: Any) -> None:
    from gateway.cli.importbatch import add_import_batch_parser

    add_import_batch_parser(commands)


def _add_credentials(commands: Any) -> None:
    from gateway.cli.credentials import add_credentials_parser

    add_credentials_parser(commands)


def _add_mindconnect(commands: Any) -> None:
    from gateway.cli.mindconnect import add_mindconnect_parser

    add_mindconnect_parser(commands)


def _add_completion(commands: Any) -> None:
    from gateway.cli.completion import add_completion_parser

    add_completion_parser(commands, build_parser)


def cmd_ota_keygen(args: argparse.Namespace) -> int:
    from gateway.updates.signing import generate_keypair

    private = Path(args.key)
    public = Path(args.public) if args.public else private.with_suffix(".pub.pem")
    generate_keypair(private, public)
    print(f"private key {private} (0600, keep it off the devices); public key {public}")
    print(f"devices: ota.public_key: {public}")
    return EXIT_OK


def cmd_ota_sign(args: argparse.Namespace) -> int:
    from gateway.updates.checkin import version_problem
    from gateway.updates.signing import (
        build_bundle,
        bundle_name,
        sign_file,
        sign_release,
        wheel_project,
    )

    artifact = Path(args.artifact)
    is_wheel = artifact.name.endswith(".whl")
    if args.product is None:
        if args.deps or args.version or args.min_version or args.downgrade:
            raise GatewayError("--deps, --version, --min-version and --downgrade need --product")
        try:  # the digest-only signature of gateways from before manifests
            signature = sign_file(Path(args.key).read_bytes(), artifact)
        except OSError as exc:
            raise GatewayError(f"cannot sign {artifact}: {exc.strerror or exc}") from exc
        output = Path(args.output) if args.output else artifact.with_name(artifact.name + ".sig")
        output.write_bytes(signature)
        print(f"{output}: {signature.decode().strip()}")
        print("note: gateways from this version on need a signed manifest: add --product")
        return EXIT_OK
    if args.output:
        raise GatewayError("--output applies only without --product (a digest signature)")
    if args.deps and not is_wheel:
        raise GatewayError("--deps applies only to a wheel")
    try:
        version = args.version or (wheel_project(artifact.name)[1] if is_wheel else None)
        if version is None:
            raise GatewayError("--version is needed for an artifact that is not a wheel")
        for name, value in (("--version", version), ("--min-version", args.min_version)):
            if value is not None and (problem := version_problem(value)) is not None:
                raise GatewayError(f"{name} {value!r}: {problem}")
        key = Path(args.key).read_bytes()
        if is_wheel:  # mode wheel installs a bundle: the wheel and every dependency, pinned
            deps = Path(args.deps) if args.deps else None
            artifact = build_bundle(artifact, deps, artifact.with_name(bundle_name(artifact)))
        release = sign_release(
            key,
            artifact,
            product=args.product,
            version=version,
            min_version=args.min_version,
            downgrade=args.downgrade,
        )
    except OSError as exc:
        raise GatewayError(f"cannot sign {artifact}: {exc.strerror or exc}") from exc
    print(f"artifact  {release.artifact} ({release.content.size} bytes)")
    print(f"manifest  {release.manifest}: {release.manifest.read_text().strip()}")
    print(f"signature {release.signature}")
    return EXIT_OK


def cmd_ota_guard(args: argparse.Namespace) -> int:
    # Runs before every start: the few settings it needs are read without the config models;
    # a config that does not read cleanly is loaded in full, which reports its problems.
    from gateway.updates.ota_guard import guard_settings, guard_slots

    settings = guard_settings(Path(args.config))
    if settings is None:
        from gateway.config import load_config
        from gateway.updates.ota_health import run_guard

        action = run_guard(load_config(Path(args.config), check_files=False))
    else:
        action = guard_slots(settings)
    print(f"ota guard: {action}")
    return EXIT_OK


def _add_ota_commands(commands: Any) -> None:
    ota = commands.add_parser("ota", help="update helpers: sign artifacts, keys, start guard")
    actions = ota.add_subparsers(dest="ota_command", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="make an Ed25519 signing key pair")
    keygen.add_argument("--key", required=True, help="private key file to create (0600)")
    keygen.add_argument("--public", help="public key file (default KEY with .pub.pem)")
    keygen.set_defaults(handler=cmd_ota_keygen)
    sign = actions.add_parser(
        "sign",
        help="with --product: write the signed manifest (and for a wheel the bundle); "
        "without: ARTIFACT.sig, the digest signature of older gateways",
    )
    sign.add_argument("artifact", help="the file devices will download (a .whl: its bundle)")
    sign.add_argument("--key", required=True, help="Ed25519 or ECDSA P-256 private key (PEM)")
    sign.add_argument("-o", "--output", help="signature file (default ARTIFACT.sig)")
    sign.add_argument("--product", help="checkin.product_id of the devices this release is for")
    sign.add_argument("--version", help="the release's version (default: the wheel's)")
    sign.add_argument("--min-version", help="the oldest running version it may replace")
    sign.add_argument(
        "--downgrade", action="store_true", help="allow it to replace a newer version"
    )
    sign.add_argument(
        "--deps", help="a folder of dependency wheels to bundle (e.g. from 'pip download')"
    )
    sign.set_defaults(handler=cmd_ota_sign)
    guard = actions.add_parser(
        "guard", help="before a start: roll back a pending update that cannot get healthy"
    )
    guard.add_argument("-c", "--config", default=str(default_config_path()), help=CONFIG_HELP)
    guard.set_defaults(handler=cmd_ota_guard)


# Each command's name and what registers it, in the order --help lists them.
COMMANDS: dict[str, Callable[[Any], None]] = {
    "run": _add_run,
    "check-config": _add_check_config,
    "status": _add_status,
    "mock": _add_mock,
    "demo": _add_demo,
    "devcloud": _add_devcloud,
    "desired": _add_desired,
    "ota": _add_ota_commands,
    "config": _add_config,
    "provision": _add_provision,
    "certs": _add_certs,
    "import-batch": _add_import_batch,
    "credentials": _add_credentials,
    "mindconnect": _add_mindconnect,
    "completion": _add_completion,
}


# Commands that do one short thing and exit (ota guard runs before every start).
BRIEF_COMMANDS = ("status", "mock", "ota")


def _without_cycle_collector() -> None:
    """For a process that runs one brief command and exits: the cycle collector's passes are
    only overhead there (5-10 ms of such a command's ~60 on the bench machine, imports
    included), and at exit the objects are frozen, so the interpreter's last pass skips them
    too (the operating system frees the memory; output is flushed as always)."""
    import atexit
    import gc

    gc.disable()
    atexit.register(gc.freeze)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; ``argv`` None: this process's own (``edge-gateway``,
    ``python -m gateway``), else a caller's in its process (tests)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["--version"]:
        print(f"edge-gateway {__version__}")  # what argparse prints, without building the parser
        return EXIT_OK
    from gateway.cli.failures import run_handler

    command = arguments[0] if arguments and arguments[0] in COMMANDS else None
    if argv is None and command in BRIEF_COMMANDS:
        _without_cycle_collector()
    args = build_parser(command).parse_args(arguments)
    code: int = run_handler(args.handler, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
