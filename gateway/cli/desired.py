"""``edge-gateway desired``: set desired keys of a dev cloud thing (as a cloud app would), or
show its shadow document.

The dev cloud is found through ``devcloud.json`` in the work folder (the demo's, or a
``devcloud`` state folder with ``--thing``). When the devices are known (``-c``, the demo's
config, or a batch thing's ``gateway.yaml``) a value the gateway would refuse is refused here,
before anything is sent, with the gateway's own message (``gateway.links.shadow.reconcile``);
otherwise the command waits briefly for the gateway's answer in the shadow
(``reported.gateway.errors`` / ``unknown_keys``) and prints a rejection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, GatewayError

DISCOVERY_FILE = "devcloud.json"
ANSWER_WAIT_S = 3.0  # how long to wait for the gateway's answer when the devices are unknown
_REQUIRED = {"host": str, "port": int, "ca": str, "cert": str, "key": str}


class DesiredRefused(GatewayError):
    """The gateway refuses (or would refuse) a desired value; one line per key."""

    def __init__(self, reasons: dict[str, str], *, sent: bool) -> None:
        self.reasons = reasons
        head = "the gateway refused" if sent else "refused (nothing sent)"
        lines = [f"  {name}: {reason}" for name, reason in reasons.items()]
        super().__init__("\n".join([f"desired state {head}:", *lines]))


@dataclass(frozen=True)
class Target:
    """Where to send: the dev cloud's broker and admin identity, the thing, its config."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    thing: str
    shadow: str | None
    config: Path | None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``; VALUE as JSON (true, 0.5, [1,0,0]) or else as a plain string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise GatewayError(f"expected NAME=VALUE (e.g. led=true), got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def find_target(workdir: Path, thing: str | None, config: Path | None) -> Target:
    """The dev cloud in ``workdir`` and the thing to address; ``GatewayError`` saying what to
    do when there is none, or when it serves several things and none is named."""
    path = workdir / DISCOVERY_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise GatewayError(
            f"no dev cloud found in {workdir} (no {DISCOVERY_FILE}): start 'edge-gateway demo', "
            "or point --workdir at a running dev cloud's folder"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GatewayError(f"cannot read {path}: {exc}; restart the dev cloud") from exc
    if not isinstance(info, dict):
        raise GatewayError(f"{path} is not a dev cloud's discovery file; restart the dev cloud")
    for key, kind in _REQUIRED.items():
        if not isinstance(info.get(key), kind):
            raise GatewayError(f"{path} has no valid {key!r}; restart the dev cloud")
    name = thing or info.get("thing")
    if not isinstance(name, str) or not name:
        raise GatewayError(_which_thing(workdir))
    if config is None:
        demo_config = info.get("config") if name == info.get("thing") else None
        batch_config = workdir / "things" / name / "gateway.yaml"
        if isinstance(demo_config, str) and Path(demo_config).is_file():
            config = Path(demo_config)
        elif batch_config.is_file():
            config = batch_config
    shadow = info.get("shadow") if name == info.get("thing") else None
    return Target(
        host=info["host"],
        port=info["port"],
        ca=Path(info["ca"]),
        cert=Path(info["cert"]),
        key=Path(info["key"]),
        thing=name,
        shadow=shadow if isinstance(shadow, str) else None,
        config=config,
    )


def _which_thing(workdir: Path) -> str:
    folder = workdir / "things"
    things = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    listed = f" ({', '.join(things[:5])}{', ...' if len(things) > 5 else ''})" if things else ""
    return (
        f"the dev cloud in {workdir} serves no single demo thing: name one with --thing NAME"
        + listed
    )


def check_before_sending(config: Path, desired: dict[str, Any]) -> None:
    """Refuse what the gateway running ``config`` would refuse, with its message."""
    from gateway.config import error_reason_chars, load_config
    from gateway.core.values import codec_for
    from gateway.links.shadow.reconcile import refusals
    from gateway.wiring import codecs_for

    try:
        loaded = load_config(config, check_files=False, codec_for=codec_for)
    except ConfigError as exc:
        raise GatewayError(f"cannot check the values against {config}: {exc.problems[0]}") from exc
    reasons = refusals(codecs_for(loaded), desired, reason_chars=error_reason_chars(loaded))
    if reasons:
        raise DesiredRefused(reasons, sent=False)


def _object(parent: object, key: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


def _status_of(document: dict[str, Any] | None) -> dict[str, Any]:
    """``reported.gateway``'s error entries, and the unknown keys' names under ``""``."""
    status = _object(_object(_object(document, "state"), "reported"), "gateway")
    unknown = _object(status, "unknown_keys")
    names = unknown.get("names")
    return {**_object(status, "errors"), "": names if isinstance(names, list) else []}


def _answer(document: dict[str, Any], names: list[str], before: dict[str, Any]) -> dict[str, str]:
    """The gateway's rejections in ``document`` for ``names`` (new since ``before``)."""
    now = _status_of(document)
    reason = _object(_object(_object(document, "state"), "reported"), "gateway")
    unknown_reason = str(_object(reason, "unknown_keys").get("reason"))
    reasons: dict[str, str] = {}
    for name in names:
        error = now.get(name)
        if isinstance(error, str) and error != before.get(name):
            reasons[name] = error
        elif name in now[""] and name not in before[""]:
            reasons[name] = unknown_reason
    return reasons


async def _exchange(
    target: Target, desired: dict[str, Any], show: bool, wait_s: float
) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    import aiomqtt

    from gateway.devcloud import ShadowClient
    from gateway.devcloud.pki import Credentials
    from gateway.devcloud.service import ShadowTimeoutError

    creds = Credentials(ca=target.ca, cert=target.cert, key=target.key)
    try:
        async with ShadowClient(target.host, target.port, creds, timeout=5.0) as client:
            answer: dict[str, str] | None = None
            if desired:
                before = await client.get(target.thing, shadow_name=target.shadow)
                accepted = await client.update(
                    target.thing, {"desired": desired}, shadow_name=target.shadow
                )
                if target.config is None:
                    answer = await _wait_for_answer(
                        client,
                        target,
                        list(desired),
                        accepted=accepted,
                        before=_status_of(before),
                        wait_s=wait_s,
                    )
            document = None
            if show or not desired:
                document = await client.get(target.thing, shadow_name=target.shadow)
                if document is None:
                    raise GatewayError(f"thing {target.thing!r} has no shadow yet")
            return document, answer
    except ShadowTimeoutError as exc:
        raise GatewayError(
            f"the dev cloud at {target.host}:{target.port} did not answer ({exc}): "
            "is its shadow service running?"
        ) from exc
    except (aiomqtt.MqttError, OSError) as exc:
        raise GatewayError(
            f"cannot reach the dev cloud's broker at {target.host}:{target.port} ({exc}): "
            "is 'edge-gateway demo' (or 'edge-gateway devcloud') running?"
        ) from exc


async def _wait_for_answer(
    client: Any,
    target: Target,
    names: list[str],
    *,
    accepted: dict[str, Any],
    before: dict[str, Any],
    wait_s: float,
) -> dict[str, str] | None:
    """Rejections the gateway reports within ``wait_s``; {} once every key is applied (gone
    from the delta); None when it did not answer in time."""
    from gateway.devcloud.service import ShadowTimeoutError

    version = int(accepted.get("version", 0))

    def answered(document: dict[str, Any]) -> bool:
        if int(document.get("version", 0)) <= version:
            return False
        delta = _object(_object(document, "state"), "delta")
        return all(name not in delta for name in names) or bool(_answer(document, names, before))

    try:
        document = await client.wait_for(
            target.thing, answered, timeout=wait_s, shadow_name=target.shadow
        )
    except ShadowTimeoutError:
        return None
    return _answer(document, names, before)


def set_desired(
    workdir: Path,
    assignments: list[str],
    *,
    show: bool = False,
    thing: str | None = None,
    config: Path | None = None,
    wait_s: float = ANSWER_WAIT_S,
) -> int:
    """``edge-gateway desired``: set desired keys of a dev cloud thing, or show its document."""
    desired = dict(parse_assignment(item) for item in assignments)
    target = find_target(workdir, thing, config)
    if desired and target.config is not None:
        check_before_sending(target.config, desired)
    try:
        document, answer = asyncio.run(_exchange(target, desired, show, wait_s))
    except* GatewayError as group:
        raise group.exceptions[0] from None
    if answer:
        raise DesiredRefused(answer, sent=True)
    if desired:
        late = " (no answer from the gateway yet: is it running?)" if answer is None else ""
        print(f"desired state updated{late if target.config is None else ''}")
    if document is not None:
        print(json.dumps(document.get("state", {}), indent=2, sort_keys=True))
    return 0
