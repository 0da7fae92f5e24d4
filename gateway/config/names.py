"""What AWS IoT allows for the values the cloud assigns (pure): thing names, hosts, ports.

A getCerts answer, a fleet-provisioning reply and ``provisioned.yaml`` all carry them; they end
up in the MQTT client id, in shadow topics and in the config.
``gateway.provisioning.answers`` re-exports these checks for the provisioning code.
"""

from __future__ import annotations

import ipaddress
import re

MAX_THING_NAME = 128
_THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
# The Provision API's device and account ids (Ioto's ``id`` and ``accountId``): opaque tokens the
# cloud assigns; they go back in check-in bodies and show in status, so no spaces or controls.
_CLOUD_ID = re.compile(r"[\x21-\x7e]{1,128}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SHOWN_CHARS = 40  # how much of a refused value an error quotes


class AnswerError(ValueError):
    """An answer (or one of its values) breaks the rules; the message says which and why.
    ``decode_object``'s messages continue a sentence about the answer ("... nests deeper
    than 8 levels"); the field checks' messages stand alone ("thing 'a/b' is not ...")."""


def shown(value: object) -> str:
    """``value`` for an error message: repr, cut to a few dozen characters."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
    return f"{text[:_SHOWN_CHARS]}... ({size})"


def thing_name(value: object, field: str = "thing") -> str:
    """A thing name as AWS IoT allows it."""
    if not isinstance(value, str) or not _THING_NAME.fullmatch(value):
        raise AnswerError(
            f"{field} {shown(value)} is not a valid thing name "
            f"(1-{MAX_THING_NAME} characters of a-z A-Z 0-9 : _ -)"
        )
    return value


def cloud_id(value: object, field: str = "id") -> str:
    """A device or account id the Provision API assigned: 1-128 printable ASCII characters."""
    if not isinstance(value, str) or not _CLOUD_ID.fullmatch(value):
        raise AnswerError(
            f"{field} {shown(value)} is not a valid id "
            "(1-128 printable ASCII characters, no spaces)"
        )
    return value


def port(value: object, field: str = "port") -> int:
    """A TCP port: an integer 1-65535 (``bool`` is not an integer here)."""
    if type(value) is not int or not 1 <= value <= 65_535:
        raise AnswerError(f"{field} {shown(value)} is not a TCP port (an integer 1-65535)")
    return value


def host_name(value: object, field: str = "endpoint") -> str:
    """A DNS host name (RFC 1123 labels, at most 253 characters) or an IP address."""
    if isinstance(value, str) and _valid_host(value):
        return value
    raise AnswerError(f"{field} {shown(value)} is not a valid host name or IP address")


def _valid_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in name.split("."))
