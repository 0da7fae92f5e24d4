"""``edge-gateway provision ...`` and ``edge-gateway certs ...``: provisioning by hand and the
certificate tools for users who run their own CA (e.g. registered with AWS IoT, or for a broker
of their own). A thing's folder holds the issuing CA as ``issuing-ca.pem``, never as ``ca.pem``,
which in Managed IoT Cloud's layout is the broker's CA."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.text import plural
from gateway.errors import ConfigError, GatewayError

# The certificate tools (and cryptography) are imported inside each command: building the
# parser, and so ``--version`` or ``status``, must not load them.
if TYPE_CHECKING:
    from gateway.provisioning.certs import PrivateKey

EXIT_OK = 0
EXIT_MISMATCH = 1


# -- provision -------------------------------------------------------------------------------


def _setup_from(args: argparse.Namespace, method: str, block: dict[str, Any]) -> Any:
    """A ProvisionSetup from ``-c`` (if given) with the command line's options on top."""
    from dataclasses import asdict

    from gateway.config import ProvisionSetup, load_provision_setup
    from gateway.config.rules import ConfigInvalid
    from gateway.config.validate import parse

    base: dict[str, Any] = {}
    if args.config:
        base = _without_nones(asdict(load_provision_setup(Path(args.config))))
        configured = (base.get("provision") or {}).get(method) or {}
        block = {**configured, **{k: v for k, v in block.items() if v is not None}}
    else:
        block = {k: v for k, v in block.items() if v is not None}
    base["provision"] = {method: block}
    if args.state_dir:
        base["state_dir"] = str(Path(args.state_dir).resolve())
    elif not args.config:
        raise GatewayError("give -c CONFIG or --state-dir DIR (where the credentials go)")
    mqtt = dict(base.get("mqtt") or {})
    if getattr(args, "endpoint", None):
        host, _, port = str(args.endpoint).rpartition(":")
        if host and port.isdigit():
            mqtt.update(host=host, port=int(port))
        else:
            mqtt["host"] = args.endpoint
    if getattr(args, "mqtt_ca", None):
        mqtt["ca"] = str(Path(args.mqtt_ca).resolve())
    base["mqtt"] = mqtt
    try:
        return parse(ProvisionSetup, base, {"base_dir": Path.cwd()})
    except ConfigInvalid as exc:
        raise ConfigError(
            [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors]
        ) from exc


def _without_nones(value: Any) -> Any:
    """A model's data (``dataclasses.asdict``) without its unset (None) values."""
    if isinstance(value, dict):
        return {key: _without_nones(item) for key, item in value.items() if item is not None}
    return value


def _abs(value: str | None) -> str | None:
    return None if value is None else str(Path(value).resolve())


def cmd_provision(args: argparse.Namespace) -> int:
    from gateway.ops.logs import configure_logging
    from gateway.provisioning.provision import provision

    if args.method == "getcerts":
        block = {
            "url": args.url,
            "claim_id": args.claim_id,
            "token_file": _abs(args.token_file),
            "ca": _abs(args.ca),
        }
    else:
        params = {}
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise GatewayError(f"invalid --param {item!r}: expected NAME=VALUE")
            params[key] = value
        block = {
            "template": args.template,
            "claim_cert": _abs(args.claim_cert),
            "claim_key": _abs(args.claim_key),
            "parameters": params or None,
        }
    setup = _setup_from(args, args.method, block)
    configure_logging(setup.logging.format, setup.logging.level, stream=sys.stderr)
    import asyncio

    new = asyncio.run(provision(setup, force=args.force))
    cert, key = setup.credential_paths
    print(f"provisioned thing {new.thing!r} ({new.method})")
    if new.host:
        print(f"  endpoint   {new.host}:{new.port}")
    print(f"  cert       {cert}")
    print(f"  key        {key} (0600)")
    print(f"  assigned   {setup.state_dir / 'provisioned.yaml'}")
    if new.identity is not None:  # getCerts' id: what check-ins send as "id"
        account = new.identity.account_id or "-"
        record = setup.state_dir / "provision.json"
        print(f"  device id  {new.identity.id} (account {account}, {record})")
    return EXIT_OK


def add_provision_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "provision", help="obtain a certificate from the cloud (Provision API or fleet claim)"
    )
    methods = parser.add_subparsers(dest="method", required=True, metavar="METHOD")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-c", "--config", help="gateway config (its provision: block, state_dir)")
        sub.add_argument("--state-dir", help="where certs/ and provisioned.yaml go")
        sub.add_argument("--force", action="store_true", help="replace an existing certificate")
        sub.set_defaults(handler=cmd_provision)

    getcerts = methods.add_parser("getcerts", help="POST /provision/getCerts with a claim id")
    getcerts.add_argument("--url", help="the Provision API's address (https://...)")
    getcerts.add_argument("--claim-id", help="the claim id")
    getcerts.add_argument("--token-file", help="file with a bearer token for the API")
    getcerts.add_argument("--ca", help="CA bundle to verify the API (default: the system's)")
    common(getcerts)

    fleet = methods.add_parser(
        "fleet", help="AWS IoT fleet provisioning by claim (CSR; the key stays here)"
    )
    fleet.add_argument("--template", help="provisioning template name")
    fleet.add_argument("--claim-cert", help="the claim certificate")
    fleet.add_argument("--claim-key", help="the claim certificate's key")
    fleet.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="template parameter"
    )
    fleet.add_argument("--endpoint", help="AWS IoT endpoint HOST[:PORT] (default: mqtt.host)")
    fleet.add_argument("--mqtt-ca", help="the broker's CA (default: mqtt.ca)")
    common(fleet)


# -- certs -----------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    from gateway.core.credfiles import read_credential_file

    return read_credential_file(Path(path), "file")


def _write(path: Path, data: bytes, mode: int, *, force: bool = False) -> None:
    from gateway.core.atomicfile import write_atomic

    if path.exists() and not force:
        raise GatewayError(f"{path} exists already; use --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode)


def _load_ca(directory: str) -> tuple[Any, PrivateKey]:
    from gateway.provisioning import certs

    folder = Path(directory)
    cert = certs.load_certificate(_read(str(folder / "ca.pem")), str(folder / "ca.pem"))
    key = certs.load_private_key(_read(str(folder / "ca.key")), str(folder / "ca.key"))
    if not certs.key_matches(cert, key):
        raise GatewayError(f"{folder / 'ca.key'} does not belong to {folder / 'ca.pem'}")
    return cert, key


def cmd_inspect(args: argparse.Namespace) -> int:
    from gateway.provisioning import certs

    info = certs.describe(certs.load_certificate(_read(args.file), args.file))
    for line in info.lines(dt.datetime.now(dt.UTC)):
        print(line)
    if args.key:
        key = certs.load_private_key(_read(args.key), args.key)
        cert = certs.load_certificate(_read(args.file), args.file)
        matches = certs.key_matches(cert, key)
        print(f"key:         {args.key} {'matches' if matches else 'does NOT match'}")
        return EXIT_OK if matches else EXIT_MISMATCH
    return EXIT_OK


def cmd_ca_create(args: argparse.Namespace) -> int:
    from gateway.provisioning import certs

    out = Path(args.out)
    cert_pem, key_pem = certs.create_ca(args.cn, days=args.days)
    _write(out / "ca.key", key_pem, 0o600, force=args.force)
    _write(out / "ca.pem", cert_pem, 0o644, force=args.force)
    fingerprint = certs.fingerprint(certs.load_certificate(cert_pem, "ca.pem"))
    print(f"CA {args.cn!r}: {out / 'ca.pem'} (key {out / 'ca.key'}, 0600), SHA-256 {fingerprint}")
    return EXIT_OK


def cmd_verification(args: argparse.Namespace) -> int:
    from gateway.provisioning import certs

    ca_cert, ca_key = _load_ca(args.ca_dir)
    cert_pem, key_pem = certs.verification_certificate(ca_cert, ca_key, args.code)
    out = Path(args.out)
    _write(out / "verification.key", key_pem, 0o600, force=args.force)
    _write(out / "verification.pem", cert_pem, 0o644, force=args.force)
    print(f"verification certificate (CN={args.code.strip()}): {out / 'verification.pem'}")
    return EXIT_OK


def cmd_issue(args: argparse.Namespace) -> int:
    from gateway.provisioning import certs

    ca_cert, ca_key = _load_ca(args.ca_dir)
    out = Path(args.out) / args.thing
    if args.csr:
        # The device keeps its key: sign its CSR (subject replaced by the thing name).
        csr = certs.load_csr(_read(args.csr), args.csr)
        public = csr.public_key()
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise GatewayError(f"{args.csr}: the CSR's key must be EC or RSA")
        cert = certs.issue_certificate(ca_cert, ca_key, args.thing, public, days=args.days)
    else:
        [thing] = certs.thing_batch(ca_cert, ca_key, [args.thing], days=args.days)
        _write(out / "privkey.pem", thing.key_pem, 0o600, force=args.force)
        cert = certs.load_certificate(thing.cert_pem, "certificate")
    _write(out / "cert.pem", certs.certificate_pem(cert), 0o644, force=args.force)
    issuing = certs.ISSUING_CA_FILE  # not ca.pem: that is the broker's CA in MIC's layout
    _write(out / issuing, certs.certificate_pem(ca_cert), 0o644, force=args.force)
    files = f"cert.pem{'' if args.csr else ', privkey.pem'}, {issuing}"
    print(f"thing {args.thing!r}: {out}/ ({files}; mqtt.ca is the broker's CA, not {issuing})")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    from gateway.provisioning import certs

    if args.count < 1:
        raise GatewayError("--count must be at least 1")
    ca_cert, ca_key = _load_ca(args.ca_dir)
    names = [f"{args.prefix}{index:03d}" for index in range(1, args.count + 1)]
    batch = certs.thing_batch(ca_cert, ca_key, names, days=args.days)
    # The zip holds private keys: it gets the same protection as a key file.
    _write(Path(args.output), certs.thing_batch_zip(ca_cert, batch), 0o600, force=args.force)
    print(f"{plural(len(batch), 'thing')} ({names[0]} .. {names[-1]}) in {args.output}")
    return EXIT_OK


def add_certs_parser(commands: Any) -> None:
    parser = commands.add_parser("certs", help="inspect certificates; run your own CA")
    tools = parser.add_subparsers(dest="certs_command", required=True, metavar="TOOL")

    inspect = tools.add_parser("inspect", help="subject, issuer, validity, key type, fingerprint")
    inspect.add_argument("file", help="certificate (PEM or DER)")
    inspect.add_argument("--key", help="private key to check against the certificate")
    inspect.set_defaults(handler=cmd_inspect)

    def ca_dir(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--ca-dir", default=".", help="folder with ca.pem and ca.key")
        sub.add_argument("--force", action="store_true", help="overwrite existing files")

    ca = tools.add_parser("ca", help="your own certificate authority")
    ca_tools = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    create = ca_tools.add_parser("create", help="a new CA (EC P-256): ca.pem and ca.key (0600)")
    create.add_argument("-o", "--out", default=".", help="output folder")
    create.add_argument("--cn", default="edge-gateway CA", help="the CA's common name")
    create.add_argument("--days", type=float, default=3650, help="validity in days")
    create.add_argument("--force", action="store_true", help="overwrite existing files")
    create.set_defaults(handler=cmd_ca_create)

    verification = tools.add_parser(
        "verification", help="a certificate with CN = the cloud's registration code"
    )
    verification.add_argument("--code", required=True, help="the registration code")
    verification.add_argument("-o", "--out", default=".", help="output folder")
    ca_dir(verification)
    verification.set_defaults(handler=cmd_verification)

    issue = tools.add_parser("issue", help="a thing certificate from your CA")
    issue.add_argument("--thing", required=True, help="thing name (the certificate's CN)")
    issue.add_argument("--csr", help="sign this CSR instead of generating a key")
    issue.add_argument("-o", "--out", default=".", help="output folder (gets THING/)")
    issue.add_argument("--days", type=float, default=365, help="validity in days")
    ca_dir(issue)
    issue.set_defaults(handler=cmd_issue)

    batch = tools.add_parser("batch", help="N things in a zip, one folder per thing")
    batch.add_argument("--count", type=int, required=True, help="how many things")
    batch.add_argument("--prefix", default="thing-", help="thing name prefix")
    batch.add_argument("-o", "--output", required=True, help="zip file to write")
    batch.add_argument("--days", type=float, default=365, help="validity in days")
    ca_dir(batch)
    batch.set_defaults(handler=cmd_batch)
