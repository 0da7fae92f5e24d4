"""The MindConnect block, the client id from the agent certificate, and the agentCertificates
answer in both of Siemens' shapes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import load_config
from gateway.errors import ConfigError, TlsSetupError
from gateway.links.mindconnect.agentcert import (
    AgentCertError,
    parse_agent_certificate,
    space_auth_key,
)
from gateway.links.mindconnect.identity import client_id, read_common_name

DEVICES = (
    "devices:\n  led: {type: LED, pin: 17, datapoint: Lamp}\n  button: {type: Button, pin: 4}\n"
)


def _config(tmp_path: Path, block: str) -> Path:
    (tmp_path / "root.pem").write_text("x")
    path = tmp_path / "gateway.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n{block}{DEVICES}")
    return path


def test_mindconnect_alone_is_a_cloud_with_the_contracts_defaults(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "mindconnect: {tenant: acme, ca: root.pem}\n"))
    block = config.mindconnect
    assert block is not None
    assert not config.has_shadow
    assert (block.host, block.port, block.publish_interval_ms) == (
        "mindconnectmqtt.eu1.mindsphere.io",
        8883,
        1000,
    )
    assert block.ca == tmp_path / "root.pem"
    assert config.devices["led"].datapoint == "Lamp"
    assert config.devices["button"].datapoint is None


def test_a_bad_mindconnect_block_is_reported_at_its_line(tmp_path: Path) -> None:
    path = _config(
        tmp_path, "mindconnect:\n  tenant: 'a/b'\n  ca: root.pem\n  chain: missing.pem\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    assert "gateway.yaml:3:3: mindconnect.tenant:" in text
    assert "gateway.yaml:5:3: mindconnect.chain: file" in text


def _certificate(tmp_path: Path, name: x509.Name) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "agent.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_the_client_id_is_the_tenant_and_the_certificates_common_name(tmp_path: Path) -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, "pi-ünï"),
        ]
    )
    assert client_id("acme", read_common_name(_certificate(tmp_path, name))) == "acme_pi-ünï"


def test_a_certificate_without_a_common_name_is_refused(tmp_path: Path) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    with pytest.raises(TlsSetupError, match="no subject CN"):
        read_common_name(_certificate(tmp_path, name))


def test_a_file_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsSetupError, match="cannot be read"):
        read_common_name(path)


CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"


def test_the_documented_answer_shape_is_read() -> None:
    answer = parse_agent_certificate(
        {"clientId": "acme_pi1", "publicKey": CERT, "privateKey": KEY, "status": "READY"}
    )
    assert (answer.client_id, answer.cert_pem, answer.key_pem) == (
        "acme_pi1",
        CERT.encode(),
        KEY.encode(),
    )


def test_the_sample_applications_answer_shape_is_read_with_escaped_newlines() -> None:
    escaped = {"certificatePem": CERT.replace("\n", "\\n"), "privateKey": KEY}
    answer = parse_agent_certificate({"clientId": "acme_pi1", "credentials": escaped})
    assert (answer.cert_pem, answer.key_pem) == (CERT.encode(), KEY.encode())


def test_an_answer_without_a_key_is_refused_without_showing_values() -> None:
    with pytest.raises(AgentCertError, match="no PEM private key") as caught:
        parse_agent_certificate({"publicKey": CERT, "privateKey": "secret-ish"})
    assert "secret-ish" not in str(caught.value)


def test_the_key_never_shows_in_repr() -> None:
    answer = parse_agent_certificate({"publicKey": CERT, "privateKey": KEY})
    assert "PRIVATE" not in repr(answer)


def test_the_space_auth_key_is_the_scheme_and_base64_of_id_and_secret() -> None:
    assert space_auth_key("t-app-1.0", "s3cret") == "Bearer dC1hcHAtMS4wOnMzY3JldA=="
    assert space_auth_key("a", "b", "Basic") == "Basic YTpi"


def test_a_client_context_with_a_chain_completes_a_mutual_tls_handshake(
    tmp_path: Path, dev_ca: Any
) -> None:
    import ssl
    import threading

    from gateway.core.tls import client_context, server_context

    agent = dev_ca.issue("agent-chain", tmp_path / "agent")
    server = dev_ca.issue("localhost", tmp_path / "server", server=True)
    listener = server_context(server.cert, server.key)
    listener.verify_mode = ssl.CERT_REQUIRED
    listener.load_verify_locations(cafile=str(server.ca))
    context = client_context(agent.ca, agent.cert, agent.key, chain=agent.ca)
    seen: list[bytes | None] = []

    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]

        def serve() -> None:
            conn, _ = sock.accept()
            with listener.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.getpeercert(binary_form=True))

        thread = threading.Thread(target=serve)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost"),
        ):
            thread.join(5)
    assert seen and seen[0] is not None  # the server saw the agent's certificate


def test_an_unreadable_chain_is_named_in_the_error(tmp_path: Path, dev_ca: Any) -> None:
    from gateway.core.tls import client_context

    agent = dev_ca.issue("agent-badchain", tmp_path / "agent")
    bad = tmp_path / "chain.pem"
    bad.write_text("not a certificate")
    with pytest.raises(TlsSetupError, match="holds no PEM certificate"):
        client_context(agent.ca, agent.cert, agent.key, chain=bad)
    with pytest.raises(TlsSetupError, match="certificate chain"):
        client_context(agent.ca, agent.cert, agent.key, chain=tmp_path / "missing.pem")
