"""TLS contexts, built in one place: a verifying client context and the dev cloud's server one.

Every client context verifies the peer (chain and host name) against the CA given, or the
system trust store when none is, and speaks TLS 1.2 at least; with a certificate and key it
presents them (mutual TLS), with ALPN names it offers them. Every file is size-checked
(``gateway.core.credfiles``) before OpenSSL reads it. Building a context reads files: call these
off the event loop (``asyncio.to_thread``). Errors leave as ``TlsSetupError`` naming the
files, never their contents; callers convert it to their own error where they need to.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gateway.core.credfiles import (
    CredentialFileError,
    check_credential_file,
    read_credential_file,
)
from gateway.errors import TlsSetupError

__all__ = ["MINIMUM_VERSION", "client_context", "server_context"]

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    alpn: Sequence[str] = (),
    ca_label: str = "CA certificate",
    chain: Path | None = None,
) -> ssl.SSLContext:
    """A client context verifying the server against ``ca`` (None: the system's trust store),
    presenting ``cert``/``key`` when both are given (and after the certificate the ones in
    ``chain``: an issuing CA the server does not hold), offering ``alpn`` (blocking). Errors
    call the CA file ``ca_label`` (the user's name for it: "CA bundle" in some settings)."""
    # Only the CA given is trusted when there is one (not the system store as well).
    # PROTOCOL_TLS_CLIENT checks the chain and the host name by default.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    mutual = cert is not None and key is not None
    _check_files(
        (ca, ca_label),
        (cert if mutual else None, "client certificate"),
        (key if mutual else None, "private key"),
        (chain if mutual else None, "certificate chain"),
    )
    try:
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load {ca_label} {ca}: {_reason(exc)}") from exc
    if mutual:
        try:
            if chain is not None and cert is not None and key is not None:
                _load_with_chain(context, cert, key, chain)
            else:
                context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (OSError, ssl.SSLError, CredentialFileError) as exc:
            # Never include key material: only the file names and the library's reason.
            raise TlsSetupError(
                f"cannot load client certificate {cert} with key {key}: {_reason(exc)}"
            ) from exc
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _load_with_chain(context: ssl.SSLContext, cert: Path, key: Path, chain: Path) -> None:
    """``load_cert_chain`` takes one file for the certificate and its chain: the two (public)
    files are joined in a private temporary folder for the call, then removed."""
    extra = read_credential_file(chain, "certificate chain")
    if b"-----BEGIN CERTIFICATE-----" not in extra:  # OpenSSL would skip it without a word
        raise TlsSetupError(f"certificate chain {chain} holds no PEM certificate")
    joined = read_credential_file(cert, "client certificate").rstrip(b"\n") + b"\n" + extra
    with tempfile.TemporaryDirectory(prefix="edge-gateway-chain-") as folder:
        path = Path(folder) / "chain.pem"
        path.write_bytes(joined)
        context.load_cert_chain(certfile=str(path), keyfile=str(key))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS >= 1.2 server context presenting ``cert``/``key`` (the dev cloud's; blocking)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _check_files((cert, "server certificate"), (key, "private key"))
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"cannot load server certificate {cert} with key {key}: {_reason(exc)}"
        ) from exc
    return context


def _check_files(*files: tuple[Path | None, str]) -> None:
    # OpenSSL would read whatever the paths hold, however large: check them first.
    try:
        for path, what in files:
            if path is not None:
                check_credential_file(path, what)
    except CredentialFileError as exc:
        raise TlsSetupError(str(exc)) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
