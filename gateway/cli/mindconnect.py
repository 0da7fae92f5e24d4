"""``edge-gateway mindconnect agent-cert --name NAME (--token-file F | --app-id ID
--app-secret-file F) [-c CONFIG | --state-dir DIR]``: obtain an auto-generated agent
certificate from Insights Hub and install it where the MindConnect link looks for it
(``state_dir/certs/mindconnect-cert.pem`` and ``mindconnect-privkey.pem``, the key 0600,
written the way provisioning writes its pair). The HTTP side is
``gateway.links.mindconnect.agentcert``; it (and aiohttp) is imported only when the command
runs. The private key is never printed or logged."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

EXIT_OK = 0
DEFAULT_GATEWAY_URL = "https://gateway.eu1.mindsphere.io"
HTTP_TIMEOUT_S = 30.0


def _read_secret(path: str, what: str) -> str:
    from gateway.core.credfiles import CredentialFileError, read_credential_file

    try:
        text = read_credential_file(Path(path), what).decode("utf-8").strip()
    except (CredentialFileError, UnicodeDecodeError) as exc:
        raise GatewayError(f"cannot read {what} {path}: {exc}") from exc
    if not text:
        raise GatewayError(f"{what} {path} is empty")
    return text


def _where(args: argparse.Namespace) -> tuple[Path, str | None, Path | None, Path | None]:
    """(state_dir, tenant, configured cert, configured key) from -c or --state-dir."""
    if args.state_dir:
        return Path(args.state_dir).resolve(), None, None, None
    if not args.config:
        raise GatewayError("give -c CONFIG or --state-dir DIR (where the certificate goes)")
    from gateway.config import load_config

    config = load_config(Path(args.config), check_files=False)
    block = config.mindconnect
    if block is None:
        return config.state_dir, None, None, None
    return config.state_dir, block.tenant, block.cert, block.key


def _app_names(args: argparse.Namespace, tenant: str) -> tuple[str, str]:
    """appName and appVersion: given, or read from an app id of the form
    ``<tenant>-<appName>-<appVersion>`` (the form Siemens' sample token clients split)."""
    name, version = args.app_name, args.app_version
    if name and version:
        return name, version
    prefix = f"{tenant}-"
    rest = args.app_id[len(prefix) :] if args.app_id.startswith(prefix) else ""
    guessed_name, _, guessed_version = rest.rpartition("-")
    if not (guessed_name and guessed_version):
        raise GatewayError(
            "give --app-name and --app-version (the app id is not <tenant>-<app>-<version>)"
        )
    return name or guessed_name, version or guessed_version


async def _obtain(args: argparse.Namespace, tenant: str | None) -> Any:
    from gateway.core.tls import client_context
    from gateway.links.mindconnect.agentcert import (
        AppCredential,
        create_agent_certificate,
        fetch_token,
    )
    from gateway.updates.http import HttpClient

    ca = Path(args.ca) if args.ca else None
    context = client_context(ca, ca_label="CA bundle")
    async with HttpClient(ssl_context=context, timeout_s=HTTP_TIMEOUT_S) as http:
        if args.token_file:
            token = _read_secret(args.token_file, "token file")
        else:
            if not tenant:
                raise GatewayError("give --tenant (or -c with a mindconnect.tenant)")
            app_name, app_version = _app_names(args, tenant)
            app = AppCredential(
                app_id=args.app_id,
                app_secret=_read_secret(args.app_secret_file, "app secret file"),
                app_name=app_name,
                app_version=app_version,
                tenant=tenant,
            )
            token = await fetch_token(http, args.gateway_url, app, scheme=args.auth_scheme)
        return await create_agent_certificate(http, args.gateway_url, token, args.name)


def cmd_agent_cert(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.links.mindconnect.identity import client_id, read_common_name
    from gateway.links.mindconnect.plan import default_credentials
    from gateway.provisioning.credstore import CredentialPaths, install_pair

    state_dir, configured_tenant, cert_path, key_path = _where(args)
    tenant = args.tenant or configured_tenant
    default_cert, default_key = default_credentials(state_dir)
    paths = CredentialPaths(cert_path or default_cert, key_path or default_key)
    if paths.exists() and not args.force:
        raise GatewayError(f"{paths.cert} exists already; use --force to replace it")
    answer = asyncio.run(_obtain(args, tenant))
    install_pair(paths, answer.cert_pem, answer.key_pem)  # key 0600 from its first byte
    common_name = read_common_name(paths.cert)
    print(f"agent certificate {args.name!r} installed (answer shape: {answer.shape})")
    print(f"  cert  {paths.cert}")
    print(f"  key   {paths.key} (0600)")
    if tenant:
        ident = client_id(tenant, common_name)
        print(f"  client id {ident}")
        if answer.client_id and answer.client_id != ident:
            print(
                f"note: Insights Hub named the client {answer.client_id!r}; the link connects "
                f"as <tenant>_<CN> = {ident!r}: check mindconnect.tenant"
            )
    elif answer.client_id:
        print(f"  client id {answer.client_id} (per Insights Hub)")
    return EXIT_OK


def add_mindconnect_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "mindconnect", help="Siemens Insights Hub (MindConnect MQTT) agent tools"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    cert = actions.add_parser(
        "agent-cert",
        help="obtain an auto-generated agent certificate and install it (key 0600)",
    )
    cert.add_argument("--name", required=True, help="the agent certificate's name (its CN)")
    source = cert.add_mutually_exclusive_group(required=True)
    source.add_argument("--token-file", help="a file holding a bearer token")
    source.add_argument("--app-id", help="app credential id (technical token manager)")
    cert.add_argument("--app-secret-file", help="a file holding the app credential's secret")
    cert.add_argument("--app-name", help="appName (default: from an id <tenant>-<app>-<ver>)")
    cert.add_argument("--app-version", help="appVersion (default: from the app id)")
    cert.add_argument("--tenant", help="host and user tenant (default: mindconnect.tenant)")
    cert.add_argument(
        "--auth-scheme",
        choices=("Bearer", "Basic"),
        default="Bearer",
        help="X-SPACE-AUTH-KEY's scheme (Siemens' API reference: Bearer; its samples: Basic)",
    )
    cert.add_argument(
        "--gateway-url",
        default=DEFAULT_GATEWAY_URL,
        help=f"Insights Hub's API gateway (default {DEFAULT_GATEWAY_URL})",
    )
    cert.add_argument("--ca", help="CA bundle to verify the API (default: the system's)")
    cert.add_argument("-c", "--config", help="gateway config (its state_dir and mindconnect:)")
    cert.add_argument("--state-dir", help="where certs/ goes")
    cert.add_argument("--force", action="store_true", help="replace an installed certificate")
    cert.set_defaults(handler=_checked(cmd_agent_cert))


def _checked(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        if args.app_id and not args.app_secret_file:
            raise GatewayError("--app-id needs --app-secret-file")
        result: int = handler(args)
        return result

    return run
