"""JSON nesting and equality, one copy for the daemon and the dev cloud.

How deep a JSON text nests, found without parsing it: one scanner for every decoder.

``json.loads`` recurses once per level, so a payload nested 100,000 deep raises RecursionError
(or worse) before any check on the parsed value could run. Every decoder of outside input (shadow
replies, check-in and provisioning answers, the dev cloud's requests) asks this first.

The scan works on whole bytes at C speed: strings are cut out (their brackets do not count),
everything but brackets is deleted, braces become brackets, and each pass then peels the
innermost ``[]`` pairs; the number of passes is the depth. ``value_depth`` measures a value
already parsed (whose depth the scan has bounded), and ``json_equal`` compares values as JSON
does (``true`` is not ``1``, but ``1`` is ``1.0``).
"""

from __future__ import annotations

import re

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_BRACES_TO_BRACKETS = bytes.maketrans(b"{}", b"[]")


def json_depth(raw: bytes, *, limit: int | None = None) -> int:
    """The nesting depth of the JSON text ``raw`` (``{}``/``[]`` levels, strings ignored).

    With ``limit``, counting stops once it is passed (the result is then ``limit + 1``), so a
    hostile text costs at most ``limit`` passes. Brackets left unclosed count as levels too.
    """
    brackets = _STRING.sub(b"", raw).translate(_BRACES_TO_BRACKETS, _NOT_BRACKETS)
    depth = 0
    while brackets and (limit is None or depth <= limit):
        peeled = brackets.replace(b"[]", b"")
        if peeled == brackets:
            break  # only unmatched brackets are left
        depth += 1
        brackets = peeled
    depth += brackets.count(b"[")  # unclosed levels (a truncated or hostile text)
    return depth if limit is None else min(depth, limit + 1)


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether ``raw`` nests more than ``limit`` levels; cheap when it has few brackets."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return json_depth(raw, limit=limit) > limit


def value_depth(value: object) -> int:
    """The nesting depth of a parsed JSON value (objects and arrays count one level each)."""
    if isinstance(value, dict):
        return 1 + max((value_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((value_depth(item) for item in value), default=0)
    return 0


def json_equal(a: object, b: object) -> bool:
    """Equal as JSON values: ``true`` is not ``1``, but ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
