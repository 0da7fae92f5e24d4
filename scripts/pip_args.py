"""The pip arguments scripts/bootstrap.sh installs with, one per line.

Usage: pip_args.py ROOT NAMES [--groups-supported]. NAMES is a comma list: each is a dependency
group of pyproject.toml (the development tools: test, bench) or else an extra. Without
--groups-supported (pip older than 25.1) a group's requirements are listed instead of
``--group``. constraints.txt pins the runtime dependencies, so the venv tests what a Pi installs.
"""

import sys
import tomllib
from pathlib import Path


def expand(groups: dict[str, list[object]], name: str) -> list[str]:
    """A group's requirements, with PEP 735 include-group entries followed."""
    items: list[str] = []
    for item in groups[name]:
        if isinstance(item, dict):
            items += expand(groups, str(item["include-group"]))
        else:
            items.append(str(item))
    return items


def main(argv: list[str]) -> None:
    root = Path(argv[0])
    pyproject = root / "pyproject.toml"
    groups = tomllib.loads(pyproject.read_text()).get("dependency-groups", {})
    names = [name for name in argv[1].split(",") if name] if len(argv) > 1 else []
    extras = ",".join(name for name in names if name not in groups)
    args = ["-c", str(root / "constraints.txt"), "-e", f"{root}[{extras}]" if extras else str(root)]
    for name in (name for name in names if name in groups):
        if "--groups-supported" in argv:
            args += ["--group", f"{pyproject}:{name}"]
        else:
            args += expand(groups, name)
    print("\n".join(args))


if __name__ == "__main__":
    main(sys.argv[1:])
