"""Check-in with the device cloud: the pure decisions (no I/O).

The gateway ``POST``s ``{"id", "productId", "test", "version", ...extra}`` to the Provision
API's ``/provision/checkin`` and gets ``{"version", "url", "checksum"[, "signature"]
[, "manifest", "manifestSignature"]}`` back; an empty answer, an absent version or the running
version means "up to date". Answers and manifests are decoded only within a size and nesting
bound; what to do with an offer (is it newer, does its signed manifest bind it), when to check
in next and whether the maintenance window is open are decided here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# LOOPBACK_NAMES, Window and is_loopback_host stay importable from here; the config owns them.
from gateway.config.formats import (  # noqa: F401
    LOOPBACK_NAMES,
    Window,
    is_loopback_host,
    url_problem,
)
from gateway.core.jsonlimits import nests_deeper_than

# Attempt lives with the state it is part of (otastate stays light for ``ota guard``).
from gateway.updates.otastate import Attempt

JITTER = 0.1  # check-ins are spread by ±10 % so a fleet does not arrive at once
MAX_ANSWER_BYTES = 64 * 1024  # a check-in answer (an offer, maybe a manifest) is far smaller
MAX_MANIFEST_BYTES = 16 * 1024
MAX_JSON_DEPTH = 16  # offers and manifests are flat; json.loads recurses per level
MANIFEST_TYPE = "edge-gateway-manifest"
# Versions reach logs, file names and the update command's argv: never an option, a path or a
# shell word. PEP 440 versions and firmware names like "fw-2.0" fit.
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Offer:
    """An update the cloud offers: a version, where to get it and its SHA-256."""

    version: str
    url: str
    checksum: str  # lower-case hex SHA-256
    signature: str | None = None  # base64, when the answer carries it instead of <url>.sig
    manifest: str | None = None  # the signed manifest, when the answer carries it ...
    manifest_signature: str | None = None  # ... with its signature (else <url>.manifest[.sig])


class OfferError(ValueError):
    """The check-in answer is malformed (reported as an update error by the caller)."""


def decode_json(
    data: bytes, *, what: str, max_bytes: int = MAX_ANSWER_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> object:
    """JSON from a server, bounded: size and nesting are checked before parsing; an empty body
    is None. Anything else raises OfferError (never RecursionError or MemoryError)."""
    if len(data) > max_bytes:
        raise OfferError(f"{what} is larger than {max_bytes} bytes")
    if not data.strip():
        return None
    if nests_deeper_than(data, max_depth):
        raise OfferError(f"{what} is nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise OfferError(f"{what} is not JSON") from exc


def version_problem(version: object) -> str | None:
    """Why ``version`` may not be used as a version string, or None."""
    if not isinstance(version, str):
        return "must be a string"
    if not VERSION.fullmatch(version):  # fullmatch: "$" alone lets a final newline through
        return "must be 1-64 characters of A-Z a-z 0-9 . + _ - starting with a letter or digit"
    return None


_PEP440 = re.compile(
    r"^v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?P<pre>[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>\d+)?)?"
    r"(?P<post>-(?P<post_n1>\d+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n2>\d+)?)?"
    r"(?P<dev>[-_.]?dev[-_.]?(?P<dev_n>\d+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
    re.IGNORECASE,
)
_INF = float("inf")


def _pep440_key(version: str) -> tuple[Any, ...] | None:
    """A sort key for a PEP 440 version (dev < pre < final < post), else None."""
    match = _PEP440.match(version)
    if match is None:
        return None
    g = match.groupdict()
    release = [int(part) for part in g["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()  # 1.0 == 1.0.0
    if g["pre"]:
        rank = {"alpha": 0, "a": 0, "beta": 1, "b": 1}.get(g["pre_l"].lower(), 2)
        pre: tuple[float, int] = (rank, int(g["pre_n"] or 0))
    elif g["dev"] and not g["post"]:
        pre = (-1, 0)  # 1.0.dev1 comes before 1.0a1
    else:
        pre = (_INF, 0)
    post = int(g["post_n1"] or g["post_n2"] or 0) if g["post"] else -1
    dev = int(g["dev_n"] or 0) if g["dev"] else _INF
    local = _natural_key(g["local"] or "")
    return (int(g["epoch"] or 0), tuple(release), pre, post, dev, local)


def _natural_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Digits compare as numbers, other runs as text ("fw-10" > "fw-9")."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p.lower()) for p in parts)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``: PEP 440 when both
    are PEP 440 versions, else digit runs as numbers and letters as text."""
    key_a, key_b = _pep440_key(a), _pep440_key(b)
    if key_a is None or key_b is None:
        left: Any = _natural_key(a)
        right: Any = _natural_key(b)
    else:
        left, right = key_a, key_b
    return int(left > right) - int(left < right)


@dataclass(frozen=True)
class Manifest:
    """What the release's signer vouches for: this product, this version, this artifact.

    ``min_version``: the oldest running version it may replace; ``downgrade``: it may replace
    a newer (or the same) version, which is otherwise refused."""

    product: str
    version: str
    sha256: str
    size: int
    min_version: str | None = None
    downgrade: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": MANIFEST_TYPE,
            "product": self.product,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
        }
        if self.min_version is not None:
            data["min_version"] = self.min_version
        if self.downgrade:
            data["downgrade"] = True
        return data

    def dumps(self) -> bytes:
        """The bytes that are signed (sorted keys, no spaces, a final newline)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n"


def parse_manifest(data: bytes) -> Manifest:
    """A manifest from its (signature-verified) bytes; OfferError when it is not one."""
    body = decode_json(data, what="the manifest", max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(body, Mapping) or body.get("type") != MANIFEST_TYPE:
        raise OfferError(f"the manifest is not a JSON object with type {MANIFEST_TYPE!r}")
    product, version, sha256, size = (body.get(k) for k in ("product", "version", "sha256", "size"))
    min_version, downgrade = body.get("min_version"), body.get("downgrade", False)
    if not isinstance(product, str) or not product:
        raise OfferError("the manifest's 'product' must be a non-empty string")
    for name, value in (("version", version), ("min_version", min_version)):
        if (value is not None or name == "version") and (problem := version_problem(value)):
            raise OfferError(f"the manifest's {name!r} {problem}")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise OfferError("the manifest's 'sha256' must be 64 hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OfferError("the manifest's 'size' must be a non-negative integer")
    if not isinstance(downgrade, bool):
        raise OfferError("the manifest's 'downgrade' must be true or false")
    assert isinstance(version, str)
    assert min_version is None or isinstance(min_version, str)
    return Manifest(product, version, sha256.lower(), size, min_version, downgrade)


def manifest_problem(
    manifest: Manifest, offer: Offer, *, product_id: str, running_version: str | None
) -> str | None:
    """Why the signed ``manifest`` does not allow ``offer`` on this device, or None."""
    if manifest.product != product_id:
        return f"the signed manifest is for product {manifest.product!r}, not {product_id!r}"
    if manifest.version != offer.version:
        return f"the signed manifest is for version {manifest.version}, not {offer.version}"
    if manifest.sha256 != offer.checksum:
        return "the signed manifest's sha256 is not the offer's checksum"
    if running_version is None:
        return None
    if manifest.min_version is not None and (
        compare_versions(running_version, manifest.min_version) < 0
    ):
        return (
            f"{manifest.version} may replace {manifest.min_version} or newer, not {running_version}"
        )
    if compare_versions(offer.version, running_version) <= 0 and not manifest.downgrade:
        return f"{offer.version} is not newer than {running_version} (no signed downgrade)"
    return None


def newer_problem(offer: Offer, running_version: str | None) -> str | None:
    """Without a verified manifest: why ``offer`` is refused as not newer, or None."""
    if running_version is not None and compare_versions(offer.version, running_version) <= 0:
        return (
            f"{offer.version} is not newer than {running_version} "
            "(a downgrade needs a signed manifest allowing it)"
        )
    return None


def checksum_problem(checksum: object) -> str:
    """Why an offer's ``checksum`` is refused, by its shape (never quoting it). Ioto computes
    it as the artifact's SHA-256 in lower-case hex (cryptSha256HashToString in its cryptLib);
    upper case is accepted too, nothing else (no "sha256:" prefix, no base64)."""
    expected = "the artifact's SHA-256 as 64 hex digits"
    if checksum is None:
        return f"an offer needs 'checksum': {expected}"
    if not isinstance(checksum, str):
        return f"'checksum' must be a string ({expected}), not {type(checksum).__name__}"
    if ":" in checksum[:16]:
        return f"'checksum' must be bare hex without an algorithm prefix ({expected})"
    if not re.fullmatch(r"[0-9a-fA-F]*", checksum):
        return f"'checksum' has characters other than hex digits ({expected})"
    return f"'checksum' has {len(checksum)} hex digits, not 64 ({expected})"


def checkin_body(
    *,
    thing: str,
    product_id: str,
    test: bool,
    version: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body: configured extra fields never override the four standard ones.
    ``thing`` is the device's id: getCerts' ``id`` when it gave one, else the thing name."""
    return {
        **dict(extra or {}),
        "id": thing,
        "productId": product_id,
        "test": test,
        "version": version,
    }


def parse_offer(body: object, running_version: str) -> Offer | None:
    """The offer in a check-in answer, or None when the device is up to date."""
    if body is None or body == {}:
        return None
    if not isinstance(body, Mapping):
        raise OfferError("expected a JSON object")
    version = body.get("version")
    if version in (None, "") or version == running_version:
        return None
    if (problem := version_problem(version)) is not None:
        raise OfferError(f"'version' {problem}")
    assert isinstance(version, str)
    url, checksum, signature = body.get("url"), body.get("checksum"), body.get("signature")
    if not isinstance(url, str) or not url:
        raise OfferError("an offer needs a 'url'")
    if (problem := url_problem(url)) is not None:
        raise OfferError(f"offered url {url[:120]!r}: {problem}")
    if not isinstance(checksum, str) or not _HEX64.fullmatch(checksum):
        raise OfferError(checksum_problem(checksum))
    manifest, manifest_signature = body.get("manifest"), body.get("manifestSignature")
    for name, value in (
        ("signature", signature),
        ("manifest", manifest),
        ("manifestSignature", manifest_signature),
    ):
        if value is not None and (not isinstance(value, str) or not value):
            kind = "JSON text" if name == "manifest" else "base64"
            raise OfferError(f"{name!r} must be a non-empty string ({kind})")
    if (manifest is None) != (manifest_signature is None):
        raise OfferError("'manifest' and 'manifestSignature' come together")
    if isinstance(manifest, str) and len(manifest) > MAX_MANIFEST_BYTES:
        raise OfferError(f"'manifest' is larger than {MAX_MANIFEST_BYTES} bytes")
    return Offer(version, url, checksum.lower(), signature, manifest, manifest_signature)


def should_apply(
    offer: Offer, *, running_version: str, rolled_back: Iterable[Attempt]
) -> str | None:
    """Why ``offer`` is skipped, or None to go ahead. A version rolled back from is offered
    again only with a different artifact (checksum)."""
    if offer.version == running_version:
        return "up to date"
    if Attempt(offer.version, offer.checksum) in set(rolled_back):
        return "this artifact was rolled back before"
    return None


def next_checkin_s(interval_s: float, rng: Callable[[float, float], float]) -> float:
    """The next regular check-in: ``interval_s`` ±10 %."""
    return interval_s * rng(1.0 - JITTER, 1.0 + JITTER)
