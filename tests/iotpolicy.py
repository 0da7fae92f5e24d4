"""Enough of AWS IoT Core's policy evaluation to check a policy document against the topics
the gateway uses (the tests of docs/aws-iot.md).

From AWS's documentation (AWS IoT Core developer guide):
- "iot-policy-variables": ``*`` matches any characters (``/`` included), ``?`` exactly one;
  ``+`` and ``#`` are literal characters in a policy; ``$(*)``, ``$(?)`` and ``$($)`` stand for
  the literal characters; ``${...}`` policy variables are replaced by the connection's values.
- "thing-policy-variables": ``iot:Connection.Thing.ThingName`` is taken from the client id
  (non-exclusive thing association): it resolves only when the client id is the thing's name.
  A resource whose variable does not resolve matches nothing.
- Actions: ``iot:Connect`` on ``client/<client id>``, ``iot:Publish`` and ``iot:RetainPublish``
  on ``topic/<topic>``, ``iot:Subscribe`` on ``topicfilter/<filter>``, ``iot:Receive`` on
  ``topic/<topic>``; an explicit Deny wins over any Allow; nothing allowed is denied.

Conditions are not evaluated: a statement with one is refused, so a test cannot pass by a
condition this module would ignore.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Connection", "PolicyError", "allows", "arn", "resource_matches"]

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_LITERALS = {"$(*)": "*", "$(?)": "?", "$($)": "$"}


class PolicyError(ValueError):
    """A policy document this evaluator cannot judge faithfully."""


@dataclass(frozen=True)
class Connection:
    """Who asks: the MQTT client id and the thing its certificate is attached to."""

    client_id: str
    thing: str | None = None

    def variables(self) -> dict[str, str]:
        values = {"iot:ClientId": self.client_id}
        if self.thing is not None and self.thing == self.client_id:
            values["iot:Connection.Thing.ThingName"] = self.thing
        return values


def arn(region: str, account: str, kind: str, name: str) -> str:
    return f"arn:aws:iot:{region}:{account}:{kind}/{name}"


def _pattern(resource: str, variables: Mapping[str, str]) -> re.Pattern[str] | None:
    """The resource as a regular expression; None if a variable does not resolve."""
    parts: list[str] = []
    index = 0
    while index < len(resource):
        special = next((k for k in _LITERALS if resource.startswith(k, index)), None)
        if special is not None:
            parts.append(re.escape(_LITERALS[special]))
            index += len(special)
            continue
        variable = _VARIABLE.match(resource, index)
        if variable is not None:
            value = variables.get(variable[1])
            if value is None:
                return None
            parts.append(re.escape(value))  # a substituted value is never a wildcard
            index = variable.end()
            continue
        char = resource[index]
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def resource_matches(pattern: str, resource: str, variables: Mapping[str, str]) -> bool:
    compiled = _pattern(pattern, variables)
    return compiled is not None and compiled.fullmatch(resource) is not None


def _listed(value: Any, what: str) -> Sequence[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise PolicyError(f"{what} must be a string or a list of strings")
    return items


def allows(policy: Mapping[str, Any], action: str, resource: str, connection: Connection) -> bool:
    """Whether ``policy`` lets ``connection`` do ``action`` on the ``resource`` ARN."""
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        raise PolicyError("the policy has no Statement list")
    variables = connection.variables()
    allowed = False
    for statement in statements:
        if "Condition" in statement:
            raise PolicyError("conditions are not evaluated here")
        if {"NotAction", "NotResource"} & set(statement):
            raise PolicyError("NotAction/NotResource are not evaluated here")
        actions = _listed(statement.get("Action"), "Action")
        resources = _listed(statement.get("Resource"), "Resource")
        if not any(resource_matches(pattern, action, {}) for pattern in actions):
            continue
        if not any(resource_matches(pattern, resource, variables) for pattern in resources):
            continue
        effect = statement.get("Effect")
        if effect == "Deny":
            return False
        if effect != "Allow":
            raise PolicyError(f"Effect must be Allow or Deny, not {effect!r}")
        allowed = True
    return allowed
