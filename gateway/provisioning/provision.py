"""Getting credentials onto a device, in each of the ways the device clouds offer.

- **Provision API** (``provision.getcerts``): ``POST {url}/provision/getCerts`` with a claim id
  answers a certificate, its key, the endpoint, port and thing name.
- **Fleet provisioning by claim** (``provision.fleet``): an EC P-256 key is generated here and
  never leaves the device; its CSR goes through ``CreateCertificateFromCsr`` and the
  certificate is registered with ``RegisterThing`` over an MQTT connection made with the claim
  certificate.

Either way the pair lands atomically in ``state_dir/certs/`` (key 0600) and the assigned
endpoint/port/thing in ``state_dir/provisioned.yaml``, which the config loader merges under the
explicit config. A failure leaves nothing half-written. ``obtain_renewal`` runs the same
exchange for a running thing and returns the new pair without installing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.config import FleetConfig, GatewayConfig, GetCertsConfig, ProvisionSetup
from gateway.config.provisioned import PROVISIONED_FILE, DeviceIdentity
from gateway.core.credfiles import CredentialFileError, read_credential_file
from gateway.errors import (
    CertificateRejectedError,
    GatewayError,
    MqttConnectionError,
    ProvisioningError,
)
from gateway.links.mqtt import AiomqttConnector, MqttSettings
from gateway.provisioning import answers, certs
from gateway.provisioning.credstore import (
    CredentialPaths,
    install_pair,
    write_identity,
    write_provisioned,
)
from gateway.provisioning.fleet import FleetClient
from gateway.provisioning.getcerts import endpoint_url, get_certs

log = structlog.get_logger()


@dataclass(frozen=True)
class NewCredentials:
    """A certificate and its key (PEM), and what the cloud assigned with them."""

    cert_pem: bytes
    key_pem: bytes
    thing: str
    host: str | None
    port: int | None
    method: str
    identity: DeviceIdentity | None = None  # getCerts' device id and accountId

    def __repr__(self) -> str:  # never show the key, even in a traceback's locals
        return f"NewCredentials(thing={self.thing!r}, host={self.host!r}, method={self.method!r})"


@dataclass(frozen=True)
class Endpoint:
    host: str | None
    port: int
    ca: Path | None
    connect_timeout_s: float


def _checked_pair(cert_pem: bytes, key_pem: bytes, source: str) -> tuple[Any, Any]:
    cert = certs.load_certificate(cert_pem, f"certificate from {source}")
    key = certs.load_private_key(key_pem, f"private key from {source}")
    if not certs.key_matches(cert, key):
        raise ProvisioningError(f"{source}: the certificate does not match the key")
    return cert, key


# -- Provision API ---------------------------------------------------------------------------


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = read_credential_file(path, "token file").decode().strip()
    except CredentialFileError as exc:
        raise ProvisioningError(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise ProvisioningError(f"token file {path} is not text") from exc
    if not token:
        raise ProvisioningError(f"token file {path} is empty")
    return token


def getcerts_credentials(body: Mapping[str, Any], source: str) -> NewCredentials:
    """The getCerts answer ``body`` checked field by field (pure apart from parsing PEM):
    certificate and key present and matching, thing a valid AWS IoT thing name, endpoint a
    host name, port an integer 1-65535. Errors start with ``source`` (the answer's URL), never
    with the user's config, and quote no key material."""
    certificate, key = body.get("certificate"), body.get("key")
    for name, value in (("certificate", certificate), ("key", key)):
        if not isinstance(value, str) or not value:
            raise ProvisioningError(f"{source}: the answer has no {name!r}")
    assert isinstance(certificate, str) and isinstance(key, str)
    thing, endpoint, port = body.get("thing"), body.get("endpoint"), body.get("port")
    if thing in (None, ""):
        raise ProvisioningError(f"{source}: the answer has no 'thing'")
    # Ioto's agent keeps the answer's "id" and "accountId" (src/cloud/provision.c) and sends
    # that id with every update check (src/cloud/update.c); so does our check-in.
    device_id, account_id = body.get("id"), body.get("accountId")
    try:
        thing = answers.thing_name(thing)
        host = None if endpoint in (None, "") else answers.host_name(endpoint)
        port = None if port is None else answers.port(port)
        identity = None
        if device_id not in (None, ""):
            identity = DeviceIdentity(
                answers.cloud_id(device_id, "id"),
                None if account_id in (None, "") else answers.cloud_id(account_id, "accountId"),
            )
    except answers.AnswerError as exc:
        raise ProvisioningError(f"{source}: {exc}") from exc
    _checked_pair(certificate.encode(), key.encode(), source)
    return NewCredentials(
        cert_pem=certificate.encode(),
        key_pem=key.encode(),
        thing=thing,
        host=host,
        port=port,
        method="getcerts",
        identity=identity,
    )


async def request_getcerts(settings: GetCertsConfig) -> NewCredentials:
    """Ask the Provision API for credentials and check the answer (nothing is written)."""
    token = await asyncio.to_thread(_read_token, settings.token_file)
    body = await get_certs(
        settings.url, settings.claim_id, token=token, ca=settings.ca, timeout_s=settings.timeout_s
    )
    source = f"getCerts answer from {endpoint_url(settings.url)}"
    return await asyncio.to_thread(getcerts_credentials, body, source)


# -- fleet provisioning ----------------------------------------------------------------------


def claim_client_id(settings: FleetConfig) -> str:
    """The client id of the first start's connection with the claim certificate (the claim
    policy in docs/aws-iot.md allows ``provision-*``)."""
    return settings.client_id or f"provision-{uuid.uuid4().hex[:12]}"


def renewal_client_id(thing: str) -> str:
    """The client id of a renewal's second connection, beside the thing's own."""
    return f"{thing}-renew"


async def request_fleet(
    settings: FleetConfig,
    endpoint: Endpoint,
    *,
    identity: tuple[Path, Path],
    client_id: str,
    csr_name: str,
) -> NewCredentials:
    """CreateCertificateFromCsr + RegisterThing over a connection made with ``identity``
    (cert, key): the claim's at first start, the thing's own for renewal."""
    if endpoint.host is None:
        raise ProvisioningError("fleet provisioning needs mqtt.host (the AWS IoT endpoint)")
    if endpoint.ca is None:
        raise ProvisioningError("fleet provisioning needs mqtt.ca (the broker's CA)")
    key = certs.generate_key()
    csr = certs.build_csr(key, csr_name)
    public = key.public_key()

    def matches(pem: str) -> bool:
        return certs.load_certificate(pem.encode(), "certificate").public_key() == public

    connector = AiomqttConnector(
        MqttSettings(
            host=endpoint.host,
            port=endpoint.port,
            client_id=client_id,
            ca=endpoint.ca,
            cert=identity[0],
            key=identity[1],
            connect_timeout_s=endpoint.connect_timeout_s,
            keepalive_s=60,
        )
    )
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        async with connector.connect() as session:
            client = FleetClient(session, timeout_s=settings.timeout_s)
            created = await client.create_from_csr(csr, matches)
            log.info("fleet_certificate_created", certificate_id=created.certificate_id)
            registration = await client.register_thing(
                settings.template, created.ownership_token, settings.parameters
            )
    except CertificateRejectedError as exc:
        raise ProvisioningError(
            f"fleet provisioning: {where} refused the certificate {identity[0]} ({exc})"
        ) from exc
    except MqttConnectionError as exc:
        raise ProvisioningError(f"fleet provisioning via {where}: {exc}") from exc
    log.info("fleet_thing_registered", thing=registration.thing_name)
    return NewCredentials(
        cert_pem=created.certificate_pem.encode(),
        key_pem=certs.private_key_pem(key),
        thing=registration.thing_name,
        host=endpoint.host,
        port=endpoint.port,
        method="fleet",
    )


# -- first start -----------------------------------------------------------------------------


def _setup_endpoint(setup: ProvisionSetup) -> Endpoint:
    mqtt = setup.mqtt
    return Endpoint(mqtt.host, mqtt.port, mqtt.ca, mqtt.connect_timeout_s)


async def provision(setup: ProvisionSetup, *, force: bool = False) -> NewCredentials:
    """Provision as ``setup.provision`` says and store the result; returns what was stored."""
    if setup.provision is None:
        raise ProvisioningError("no 'provision:' block in the config")
    cert_path, key_path = setup.credential_paths
    paths = CredentialPaths(cert_path, key_path)
    if paths.exists() and not force:
        raise ProvisioningError(f"{cert_path} exists already; use --force to replace it")
    method = setup.provision
    if method.getcerts is not None:
        log.info("provisioning_started", method="getcerts", url=method.getcerts.url)
        new = await request_getcerts(method.getcerts)
    else:
        assert method.fleet is not None
        fleet = method.fleet
        log.info("provisioning_started", method="fleet", template=fleet.template)
        new = await request_fleet(
            fleet,
            _setup_endpoint(setup),
            identity=(fleet.claim_cert, fleet.claim_key),
            client_id=claim_client_id(fleet),
            csr_name=setup.thing or "edge-gateway",
        )
    await asyncio.to_thread(store, setup.state_dir, paths, new)
    log.info(
        "provisioned",
        method=new.method,
        thing=new.thing,
        host=new.host,
        port=new.port,
        cert=str(cert_path),
    )
    return new


def store(
    state_dir: Path, paths: CredentialPaths, new: NewCredentials, *, ca: Path | None = None
) -> None:
    """provisioned.yaml and the device identity first, then the pair (the certificate last): a
    crash at any point leaves no certificate, so the next start provisions again (blocking).
    ``ca``: the broker's CA, installed already (an imported Thing Batch), recorded as mqtt.ca."""
    assigned: dict[str, Any] = {"thing": new.thing}
    mqtt: dict[str, Any] = {"cert": str(paths.cert), "key": str(paths.key)}
    if ca is not None:
        mqtt["ca"] = str(ca)
    if new.host is not None:
        mqtt["host"] = new.host
    if new.port is not None:
        mqtt["port"] = new.port
    assigned["mqtt"] = mqtt
    provisioned = state_dir / PROVISIONED_FILE
    previous = provisioned.read_bytes() if provisioned.exists() else None
    write_provisioned(state_dir, assigned)
    try:
        write_identity(state_dir, new.identity)
        install_pair(paths, new.cert_pem, new.key_pem)
    except GatewayError:
        with contextlib.suppress(OSError):
            if previous is None:
                provisioned.unlink()
            else:
                provisioned.write_bytes(previous)
        raise


async def provision_at_start(setup: ProvisionSetup) -> None:
    """``run``'s first step: provision when configured and no certificate exists yet."""
    if setup.needs_provisioning:
        await provision(setup)


# -- renewal ---------------------------------------------------------------------------------


async def obtain_renewal(config: GatewayConfig) -> NewCredentials:
    """A new pair for the running thing, by the configured provisioning method (not installed).

    Fleet: a new key and CSR through CreateCertificateFromCsr + RegisterThing, over a second
    connection made with the thing's current certificate (client id ``<thing>-renew``).
    Provision API: a new getCerts answer for the same claim."""
    method = config.provision
    if method is None:
        raise ProvisioningError("renewal needs a 'provision:' block in the config")
    mqtt = config.shadow_mqtt
    if method.getcerts is not None:
        new = await request_getcerts(method.getcerts)
    else:
        assert method.fleet is not None
        new = await request_fleet(
            method.fleet,
            Endpoint(mqtt.host, mqtt.port, mqtt.ca, mqtt.connect_timeout_s),
            identity=_client_pair(mqtt.cert, mqtt.key),
            client_id=renewal_client_id(config.shadow_thing),
            csr_name=config.shadow_thing,
        )
    if new.thing != config.thing:
        raise ProvisioningError(
            f"renewal answered a certificate for thing {new.thing!r}, not {config.thing!r}"
        )
    return new


def _client_pair(cert: Path | None, key: Path | None) -> tuple[Path, Path]:
    """mqtt.cert and mqtt.key (the config requires them with a provision: block)."""
    assert cert is not None and key is not None
    return cert, key
