"""The one exception hierarchy of the gateway; adapters convert library errors into it."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class DeviceValueError(GatewayError):
    """A shadow value cannot be applied to (or read from) a device."""


class GpioError(GatewayError):
    """The GPIO library failed to set up or drive a device."""


class MqttConnectionError(GatewayError):
    """The MQTT link failed or could not be established."""


class CertificateRejectedError(MqttConnectionError):
    """The TLS handshake failed on certificates: ours refused, or the broker's not trusted."""


class MqttAuthError(MqttConnectionError):
    """The broker refused the user name or password (CONNACK "bad user name or password" or
    "not authorized"): a retry with the same credentials cannot succeed."""


class TlsProtocolError(MqttConnectionError):
    """The TLS handshake failed before certificates mattered: no common protocol version or
    cipher (e.g. a broker that only speaks TLS 1.1), or a generic handshake failure."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TlsSetupError(GatewayError):
    """Certificates or keys could not be loaded into a TLS context."""


class AdminError(GatewayError):
    """The admin socket could not be reached or refused a request."""


class UpdateError(GatewayError):
    """A check-in, download, verification or update step failed (never fatal to the gateway)."""


class ProvisioningError(GatewayError):
    """Obtaining or renewing credentials from the cloud failed; nothing half-written is left."""
