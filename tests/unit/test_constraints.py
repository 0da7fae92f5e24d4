"""constraints.txt pins every runtime dependency, and this test venv runs exactly those pins
(scripts/bootstrap.sh installs with it), so what the tests pass is what a Pi installs."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(text: str) -> dict[str, str]:
    """``name==version`` lines (comments and blanks skipped), by canonical name."""
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not a pin: {line!r}"
            pins[canonical(name)] = version.strip()
    return pins


def runtime_closure(project: str) -> set[str]:
    """Every distribution ``project`` needs at run time (no extras), as installed here."""
    seen: set[str] = set()
    todo = [project]
    while todo:
        dist = metadata.distribution(todo.pop())
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonical(requirement.name)
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_constraints_pin_every_runtime_dependency() -> None:
    pins = read_constraints((ROOT / "constraints.txt").read_text())
    missing = runtime_closure("edge-gateway") - set(pins)
    assert not missing, f"not in constraints.txt (run scripts/lock.sh): {sorted(missing)}"


def test_the_test_venv_runs_the_pinned_versions() -> None:
    pins = read_constraints((ROOT / "constraints.txt").read_text())
    installed = {name: metadata.version(name) for name in runtime_closure("edge-gateway")}
    assert {name: pins.get(name) for name in installed} == installed


def test_constraints_pin_nothing_the_gateway_does_not_need() -> None:
    pins = read_constraints((ROOT / "constraints.txt").read_text())
    assert set(pins) <= runtime_closure("edge-gateway")
