"""``edge-gateway check-config``: the checks ``run`` makes before it touches a pin, so a config
it passes does not make ``run`` exit at start.

Structure (the config's own checks, ``gateway.config.load_config``), then the files, unless
``--no-files`` (a laptop without the Pi's certificates): the TLS context ``run`` builds (stdlib
``ssl``: the CA loads, the certificate and key load and belong together), and ``run``'s
start-up certificate check (the key's mode, the pair, the validity dates; the same
functions the daemon calls). A pair provisioning has still to obtain is not checked. The other
cloud links' files are checked as their start reads them: THiNX's API key file (mode 0600),
MindConnect's agent certificate (its CN, the client id) and its TLS context.
"""

from __future__ import annotations

import time
from pathlib import Path

from gateway.cli.text import plural
from gateway.config import GatewayConfig
from gateway.errors import ConfigError, GatewayError
from gateway.exitcodes import EXIT_OK


def _blame(message: str, config: GatewayConfig) -> str:
    """The mqtt key whose file the message names first (the certificate when unclear)."""
    mqtt = config.shadow_mqtt
    return _named(message, {"ca": mqtt.ca, "cert": mqtt.cert, "key": mqtt.key})


def file_problems(config: GatewayConfig, path: Path) -> list[str]:
    """What ``run`` would refuse in the files and folders ``config`` names, as
    ``FILE:LINE:COL: key: what``."""
    from gateway.cli.preflight import folder_problems
    from gateway.config.yamlsource import load_yaml

    document = load_yaml(path, collect=True)
    # The folders the daemon writes, as the user running this (nothing is created).
    found = [
        f"{document.locate((key,))}: {key}: {message}"
        for key, message in folder_problems(
            path, config.state_dir, config.admin_socket, create=False
        )
    ]
    for where, text in _links(config):
        dotted = ".".join(where)
        found.append(f"{document.locate(where)}: {dotted}: {text.removeprefix(dotted + ' ')}")
    mqtt = config.mqtt
    if mqtt is None:
        return found  # no shadow link: run checks no MQTT credentials either
    if config.provision is not None and not (
        mqtt.cert is not None
        and mqtt.key is not None
        and mqtt.cert.is_file()
        and mqtt.key.is_file()
    ):
        return found  # provisioning obtains the pair at the first start
    # A broker that logs in with a password (no client certificate): its CA is checked only.
    checks = (_tls_problem, _certificate_problem) if mqtt.cert is not None else (_tls_problem,)
    for check in checks:
        problem = check(config)
        if problem is not None:
            key = _blame(problem, config)
            found.append(f"{document.locate(('mqtt', key))}: mqtt.{key}: {problem}")
            break  # the second check reads the same files: one reason is enough
    return found


def _links(config: GatewayConfig) -> list[tuple[tuple[str, str], str]]:
    """What the start of the other cloud links would refuse, with the functions they call
    (THiNX: the API key file; MindConnect: the agent certificate's CN, then its TLS context)."""
    found: list[tuple[tuple[str, str], str]] = []
    if config.thinx is not None:
        from gateway.links.thinx.link import read_api_key

        try:
            read_api_key(config.thinx.api_key_file)
        except GatewayError as exc:
            found.append((("thinx", "api_key_file"), str(exc)))
    block = config.mindconnect
    if block is not None:
        from gateway.core.tls import client_context
        from gateway.links.mindconnect.identity import read_common_name
        from gateway.links.mindconnect.plan import agent_files

        cert, key = agent_files(config, block)
        files = {"ca": block.ca, "cert": cert, "key": key, "chain": block.chain}
        try:
            read_common_name(cert)
            client_context(block.ca, cert, key, chain=block.chain)
        except GatewayError as exc:
            text = str(exc)
            if block.cert is None and not cert.exists():
                text += " (install one with 'edge-gateway mindconnect agent-cert')"
            found.append((("mindconnect", _named(text, files)), text))
    return found


def _named(message: str, files: dict[str, Path | None]) -> str:
    """The key whose file ``message`` names first (the certificate when unclear)."""
    named = [(message.find(str(p)), key) for key, p in files.items() if p and str(p) in message]
    return min(named)[1] if named else "cert"


def _tls_problem(config: GatewayConfig) -> str | None:
    from gateway.core.tls import client_context

    mqtt = config.shadow_mqtt
    try:
        client_context(mqtt.ca, mqtt.cert, mqtt.key)
    except GatewayError as exc:
        return str(exc)
    return None


def _certificate_problem(config: GatewayConfig) -> str | None:
    # The daemon's own start-up check (gateway.provisioning.renewal), without its repair of
    # a half-renewed pair: check-config changes no file.
    from gateway.provisioning import pairhealth  # the daemon's own check: no cryptography
    from gateway.provisioning.credstore import key_file_facts, paths_of, read_pair

    paths = paths_of(config)
    try:
        cert_data, key_data = read_pair(paths)
        mode, dedicated = key_file_facts(paths.key)
        pairhealth.check_pair(
            cert_data=cert_data,
            key_data=key_data,
            cert_source=str(paths.cert),
            key_source=str(paths.key),
            key_mode=mode,
            dedicated_group=dedicated,
            now=time.time(),
            warn_before_days=config.certs.warn_before_days,
        )
    except GatewayError as exc:
        return str(exc)
    return None


def check_config(path: Path, *, files: bool = True) -> int:
    from gateway.config import load_config
    from gateway.core.values import codec_for

    config = load_config(path, codec_for=codec_for, check_files=files)
    if files and (problems := file_problems(config, path)):
        raise ConfigError(problems)
    note = "" if files else "; files not checked"
    summary = f"{', '.join(clouds(config))}; {plural(len(config.devices), 'device')}{note}"
    print(f"{path}: OK ({summary})")
    return EXIT_OK


def clouds(config: GatewayConfig) -> list[str]:
    """The clouds a config connects to, as the OK line names them (a config has at least one)."""
    named = [f"thing {config.thing!r} on the shadow"] if config.has_shadow else []
    if config.thinx is not None:
        named.append("THiNX")
    if config.mindconnect is not None:
        named.append("MindConnect")
    return named
