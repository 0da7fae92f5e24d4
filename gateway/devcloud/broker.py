"""Run mosquitto with mutual TLS and per-thing ACLs, the way AWS IoT Core authorises things."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from gateway.devcloud.pki import Credentials, DevCA, DevCloudError, client_ssl_context
from gateway.devcloud.pki import is_ip as pki_is_ip

__all__ = ["BrokerError", "MosquittoBroker"]

_FALLBACK_BINARY = "/usr/sbin/mosquitto"
_START_TIMEOUT = 10.0
_STOP_GRACE = 3.0
_LOG_TAIL_LINES = 30

log = structlog.get_logger()

# What a fleet-provisioning identity may use: AWS's CreateCertificateFromCsr and RegisterThing.
_PROVISIONING_TOPICS = (
    "topic readwrite $aws/certificates/create-from-csr/#",
    "topic readwrite $aws/provisioning-templates/#",
)


class BrokerError(DevCloudError):
    """mosquitto is missing, failed to start, or stopped unexpectedly."""


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_mosquitto(
    conf: Path, workdir: Path, error: type[DevCloudError]
) -> subprocess.Popen[bytes]:
    """mosquitto on ``conf`` in its own session (a Ctrl-C in the terminal goes to us, not to
    it), stdout and stderr into ``workdir/mosquitto.stderr``; ``error`` when it is missing."""
    binary = shutil.which("mosquitto") or _FALLBACK_BINARY
    if not os.access(binary, os.X_OK):
        raise error(
            "mosquitto not found on PATH nor at /usr/sbin/mosquitto; "
            "install it (apt-get install mosquitto) to use the dev cloud"
        )
    with (workdir / "mosquitto.stderr").open("wb") as stderr:
        return subprocess.Popen(
            [binary, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``process``, SIGKILL it after a grace period, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _mqtt_connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 3.1.1 CONNECT (clean session, keepalive 10 s)."""
    ident = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"
    body = variable + len(ident).to_bytes(2, "big") + ident
    return bytes([0x10, len(body)]) + body  # body < 128 bytes: one length byte


class MosquittoBroker:
    """A mosquitto process on loopback: TLS >= 1.2, client certs required, CN is the username.

    A thing whose certificate CN is X may only use ``$aws/things/X/#`` and ``things/X/#``; the
    service and admin identities may use every topic. For fleet provisioning, claim identities
    may only use the ``$aws/certificates/create-from-csr/`` and ``$aws/provisioning-templates/``
    topics, and an identity attached to a thing (a certificate registered by RegisterThing,
    whose CN is not the thing name) gets that thing's topics plus the provisioning ones (to
    renew). ``set_fleet_identities`` rewrites the ACL and has mosquitto reload it.
    """

    def __init__(
        self,
        workdir: Path,
        ca: DevCA,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service_identity: str = "devcloud-service",
        admin_identities: Sequence[str] = ("devcloud-admin",),
    ) -> None:
        if any(c.isspace() for c in str(workdir)):
            # mosquitto.conf has no quoting: a path with spaces cannot be written into it.
            raise BrokerError(f"broker workdir must not contain whitespace: {workdir}")
        if not admin_identities:
            raise BrokerError("at least one admin identity is needed to probe the broker")
        self._workdir = workdir
        self._ca = ca
        self._host = host
        self._port = port
        self._service_identity = service_identity
        self._admin_identities = tuple(admin_identities)
        self._process: subprocess.Popen[bytes] | None = None
        self._credentials: dict[str, Credentials] = {}
        self._log_offset = 0
        self._claim_identities: tuple[str, ...] = ()
        self._attached: dict[str, str] = {}  # certificate identity -> thing name
        self._mindconnect: dict[str, list[Path]] = {}  # MindConnect tenant -> its CA certificates

    # --- properties -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port (chosen by ``start()`` when constructed with 0)."""
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def service_identity(self) -> str:
        return self._service_identity

    @property
    def admin_identities(self) -> tuple[str, ...]:
        return self._admin_identities

    @property
    def log_path(self) -> Path:
        return self._workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def credentials(self, identity: str) -> Credentials:
        """A client certificate with CN ``identity`` (issued once, then cached)."""
        if identity not in self._credentials:
            if not identity or "/" in identity or identity in {".", ".."}:
                raise BrokerError(f"invalid identity for a client certificate: {identity!r}")
            directory = self._workdir / "clients" / identity
            self._credentials[identity] = self._ca.issue(identity, directory)
        return self._credentials[identity]

    def add_mindconnect_tenant(self, tenant: str, ca_cert: Path) -> None:
        """Trust ``ca_cert`` for client certificates too, and give each agent it certifies
        (username = certificate CN) only ``tc/<tenant>/<tenant>_<CN>/#``. Call again to trust
        another CA of the same tenant (an environment's own CA).

        mosquitto reads its CA file at start: a running broker must be restarted (``restart``)
        before agents of a CA added now can connect.
        """
        if not tenant or any(c.isspace() or c in "#+/_" for c in tenant):
            raise BrokerError(f"invalid MindConnect tenant name: {tenant!r}")
        cas = self._mindconnect.setdefault(tenant, [])
        if ca_cert not in cas:
            cas.append(ca_cert)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start mosquitto and wait until it accepts an admin's TLS connection."""
        if self.running:
            raise BrokerError("broker already running")
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self._port == 0:
            self._port = free_port(self._host)
        conf = self._write_config()
        # The log is appended to across restarts; only what this process writes counts.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._process = spawn_mosquitto(conf, self._workdir, BrokerError)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("broker_started", host=self._host, port=self._port, pid=self._process.pid)

    def stop(self) -> None:
        """SIGTERM mosquitto, SIGKILL it after 3 s, and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)
        log.info("broker_stopped", port=self._port, returncode=process.returncode)

    def restart(self) -> None:
        """Stop and start again on the same port (mosquitto sets SO_REUSEADDR)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------------

    def _write_config(self) -> Path:
        server_dir = self._workdir / "server"
        if not (server_dir / "cert.pem").exists():
            # The listen host goes into the SAN so clients can verify it as given.
            is_ip = pki_is_ip(self._host)
            self._ca.issue(
                "devcloud-broker",
                server_dir,
                server=True,
                dns_names=() if is_ip else (self._host,),
                ip_addresses=(self._host,) if is_ip else (),
            )
        acl = self._workdir / "acl"
        privileged = [self._service_identity, *self._admin_identities]
        acl_lines = [
            "# Generated by gateway.devcloud.broker. Patterns apply to every client:",
            "# a thing (username = certificate CN) may only use its own topics.",
            "pattern readwrite $aws/things/%u/#",
            "pattern readwrite things/%u/#",
        ]
        for tenant in self._mindconnect:
            # A MindConnect agent's client id is <tenant>_<CN>; mosquitto cannot refuse another
            # client id, so the topics are keyed on the certificate (username = CN) instead.
            acl_lines.append(f"pattern readwrite tc/{tenant}/{tenant}_%u/#")
        for identity in dict.fromkeys(privileged):
            # '#' does not match topics starting with '$', so $aws/# is granted explicitly.
            acl_lines += ["", f"user {identity}", "topic readwrite #", "topic readwrite $aws/#"]
        for identity in dict.fromkeys(self._claim_identities):
            acl_lines += ["", f"user {identity}", *_PROVISIONING_TOPICS]
        for identity, thing in self._attached.items():
            acl_lines += [
                "",
                f"user {identity}",
                f"topic readwrite $aws/things/{thing}/#",
                f"topic readwrite things/{thing}/#",
                *_PROVISIONING_TOPICS,
            ]
        acl.write_text("\n".join(acl_lines) + "\n")

        lines = [
            "# Generated by gateway.devcloud.broker",
            "per_listener_settings false",
            "allow_anonymous false",
            "persistence false",
            # Without it every reply waits ~40 ms for Nagle / delayed ACK (default is false).
            "set_tcp_nodelay true",
            f"acl_file {acl}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would drop to user "mosquitto", which cannot read our 0600 keys.
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        cafile = server_dir / "ca.pem"
        if self._mindconnect:
            # One bundle: the dev CA (things, services) and every MindConnect tenant CA.
            bundle = self._workdir / "client-cas.pem"
            extra = [path for paths in self._mindconnect.values() for path in paths]
            pems = [cafile.read_bytes(), *(path.read_bytes() for path in extra)]
            bundle.write_bytes(b"".join(p if p.endswith(b"\n") else p + b"\n" for p in pems))
            cafile = bundle
        lines += [
            "",
            f"listener {self._port} {self._host}",
            f"cafile {cafile}",
            f"certfile {server_dir / 'cert.pem'}",
            f"keyfile {server_dir / 'privkey.pem'}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",  # the minimum accepted version in mosquitto 2.x
        ]
        conf = self._workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def set_fleet_identities(
        self, *, claims: Sequence[str], attached: dict[str, str], timeout_s: float = 5.0
    ) -> None:
        """Claim identities and certificate identity -> thing attachments; a running broker
        reloads its ACL (SIGHUP) before this returns (blocking)."""
        for name in (*claims, *attached, *attached.values()):
            if not name or any(c.isspace() or c in "#+/" for c in name):
                raise BrokerError(f"invalid identity or thing name for the ACL: {name!r}")
        self._claim_identities = tuple(claims)
        self._attached = dict(attached)
        if not self.running:
            return
        assert self._process is not None
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._write_config()
        self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while not self._logged_since(offset, b"Reloading config"):
            if time.monotonic() > deadline:
                raise self._failure("mosquitto did not reload its ACL after SIGHUP")
            time.sleep(0.01)

    def _logged_since(self, offset: int, text: bytes) -> bool:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return text in fh.read()
        except OSError:
            return False

    def _failure(self, reason: str) -> BrokerError:
        tail = _tail(self.log_path) or _tail(self._workdir / "mosquitto.stderr")
        return BrokerError(f"{reason}\n--- mosquitto log tail ---\n{tail or '(empty)'}")

    def _wait_ready(self) -> None:
        context = client_ssl_context(self.credentials(self._admin_identities[0]))
        deadline = time.monotonic() + _START_TIMEOUT
        last_error = "no attempt"
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise self._failure(f"mosquitto exited with code {self._process.returncode}")
            # Probe only once this process says it is running: until then (or if its listener
            # failed) a probe could be answered by another broker on the same port.
            if self._logged_running():
                try:
                    self._probe(context)
                    return
                except (OSError, ssl.SSLError, BrokerError) as exc:
                    last_error = str(exc) or type(exc).__name__
            else:
                last_error = "mosquitto has not logged 'running' yet"
            if time.monotonic() > deadline:
                raise self._failure(
                    f"mosquitto did not accept a TLS connection on {self._host}:{self._port} "
                    f"within {_START_TIMEOUT:.0f} s (last error: {last_error})"
                )
            time.sleep(0.05)

    def _logged_running(self) -> bool:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return b" running" in fh.read()
        except OSError:
            return False

    def _probe(self, context: ssl.SSLContext) -> None:
        """Connect as an admin over TLS and complete an MQTT CONNECT/CONNACK exchange."""
        with (
            socket.create_connection((self._host, self._port), timeout=2.0) as raw,
            context.wrap_socket(raw, server_hostname=self._host) as tls,
        ):
            tls.sendall(_mqtt_connect_packet(f"devcloud-probe-{os.getpid()}"))
            connack = b""
            while len(connack) < 4:
                chunk = tls.recv(4 - len(connack))
                if not chunk:
                    raise BrokerError("connection closed before CONNACK")
                connack += chunk
            if connack[0] != 0x20 or connack[3] != 0:
                raise BrokerError(f"CONNACK refused: {connack.hex()}")
            tls.sendall(b"\xe0\x00")  # DISCONNECT
