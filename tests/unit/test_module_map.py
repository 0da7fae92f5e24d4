"""The README's module map names every package and module under gateway/, and nothing that is
not there: a new module (or a removed one) fails here until the map says so.

The map's first column names a package as `pkg/` followed by its modules in parentheses, a
subpackage the same way inside them (`links/` (`mqtt`, `shadow/` (`sync`, ...))), and top-level
modules as `name.py`. ``__init__`` and ``__main__`` belong to their package and are not named."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GATEWAY = REPO / "gateway"
TOKEN = re.compile(r"`([^`]+)`|(\()|(\))")


def map_rows() -> list[str]:
    """The first cell of each row of the README's module map table."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| package | what it holds | may import |") :].split("\n\n")[0]
    return [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:]]


def named_in(cell: str) -> set[str]:
    """The modules and packages a cell names, as paths under gateway/ ("links/shadow/sync.py",
    "links/shadow/")."""
    named: set[str] = set()
    prefixes = [""]
    last = ""
    for name, opening, closing in TOKEN.findall(cell):
        if opening:
            prefixes.append(prefixes[-1] + last)  # last named package: the group's parent
        elif closing:
            prefixes.pop()
        else:
            last = name
            path = prefixes[-1] + name
            named.add(path if name.endswith(("/", ".py")) else f"{path}.py")
    return named


def in_the_tree() -> set[str]:
    """Every Python package and module under gateway/ (dunder modules excepted)."""
    found: set[str] = set()
    for path in GATEWAY.rglob("*.py"):
        relative = path.relative_to(GATEWAY)
        if "__pycache__" in relative.parts:
            continue
        if path.name not in ("__init__.py", "__main__.py"):
            found.add(relative.as_posix())
        for parent in list(relative.parents)[:-1]:
            if (GATEWAY / parent / "__init__.py").is_file():
                found.add(f"{parent.as_posix()}/")
    return found


def named_in_the_map() -> set[str]:
    return set().union(*(named_in(cell) for cell in map_rows()))


def test_the_parser_reads_nested_groups() -> None:
    cell = "`links/` (`mqtt`, `shadow/` (`sync`, `topics`), `thinx/` (`link`)), `app.py`"
    assert named_in(cell) == {
        "links/",
        "links/mqtt.py",
        "links/shadow/",
        "links/shadow/sync.py",
        "links/shadow/topics.py",
        "links/thinx/",
        "links/thinx/link.py",
        "app.py",
    }


def test_every_package_and_module_is_named_in_the_readmes_module_map() -> None:
    missing = sorted(in_the_tree() - named_in_the_map())
    assert not missing, f"README.md's module map does not name: {missing}"


def test_the_module_map_names_nothing_that_does_not_exist() -> None:
    stale = sorted(named_in_the_map() - in_the_tree())
    assert not stale, f"README.md's module map names what is not under gateway/: {stale}"
