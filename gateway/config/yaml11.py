"""Where YAML 1.1 would read a config value as something other than what was written (pure).

PyYAML resolves plain scalars by YAML 1.1's rules: ``00000001`` is the octal number 1,
``017`` is 15, ``off``/``yes`` are booleans, ``1:30`` is 90 (base 60). A config must never run
with a value the user did not write, so:

- **names** (the thing name, the shadow name, device names and the names ``follow`` and
  ``interlock`` refer to) are read as the text written: ``thing: 00000001`` is the thing
  ``"00000001"`` (the Thing API guide's own example name), a device called ``off`` is ``"off"``;
- a **number written with a leading zero** (YAML 1.1 octal) or **in base 60** is refused at its
  line, saying what YAML made of it and what to write instead; a pin (``pin: 017``) says to
  write the decimal BCM number (``17``), also for ``08``, which YAML 1.1 leaves as text.
"""

from __future__ import annotations

import re

from gateway.config.checks import Problem
from gateway.config.pins import PIN_FIELD_NAMES
from gateway.config.yamlsource import KeyPath, YamlDocument

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1 octal (PyYAML: [-+]?0[0-7_]+) and base-60 numbers ([-+]?[1-9][0-9_]*(:[0-5]?[0-9])+)
_OCTAL = re.compile(r"[-+]?0[0-7_]*[0-7][0-7_]*")
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]*[0-9][0-9_]*")


def is_name_place(key_path: KeyPath, is_key: bool) -> bool:
    """The config's places that hold a name (a ``yamlsource.NameRule``)."""
    if is_key:
        return key_path == ("devices",)
    match key_path:
        case ("thing",) | ("shadow", "name"):
            return True
        case ("devices", str(), "follow") | ("devices", str(), "follow", "device"):
            return True
        case ("interlock", int()) | ("interlock", int(), int()):
            return True
    return False


def _is_pin(key_path: KeyPath) -> bool:
    return len(key_path) == 3 and key_path[0] == "devices" and key_path[2] in PIN_FIELD_NAMES


def _decimal(text: str) -> str:
    """``text`` (digits, maybe signed, with a leading zero) as the decimal number meant."""
    sign = text[0] if text[0] in "+-" else ""
    digits = text.lstrip("+-").replace("_", "").lstrip("0") or "0"
    return f"{sign}{digits}"


def _base60(text: str) -> str:
    value = 0.0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        value = value * 60 + float(part)
    shown = f"{value:g}" if "." in text else str(int(value))
    return f"-{shown}" if text.startswith("-") else shown


def yaml11_problems(document: YamlDocument) -> list[Problem]:
    """Every plain scalar of ``document`` that YAML 1.1 read as a different number than the
    one written (or a pin written with a leading zero), with what to write instead."""
    problems: list[Problem] = []
    for key_path, (text, tag) in document.plain.items():
        if _is_pin(key_path) and _LEADING_ZERO.fullmatch(text):
            read_as = (
                f"reads a leading 0 as octal ({text} is {int(text.replace('_', ''), 8)})"
                if tag == _INT_TAG
                else f"reads {text} as text (it is no octal number)"
            )
            problems.append(
                (
                    key_path,
                    f"pin {text}: YAML 1.1 {read_as}; BCM pins are decimal: write {_decimal(text)}",
                )
            )
        elif tag == _INT_TAG and _OCTAL.fullmatch(text):
            value = int(text.replace("_", ""), 8)
            problems.append(
                (
                    key_path,
                    f"{text}: YAML 1.1 reads a leading 0 as octal, so this is {value}; "
                    f"write {_decimal(text)} for that decimal number, {value} for the octal "
                    f"one, or quote it ('{text}') for text",
                )
            )
        elif tag in (_INT_TAG, _FLOAT_TAG) and _BASE60.fullmatch(text):
            problems.append(
                (
                    key_path,
                    f"{text}: YAML 1.1 reads numbers with ':' in base 60, so this is "
                    f"{_base60(text)}; write that number, or quote it ('{text}') for text",
                )
            )
    return problems
