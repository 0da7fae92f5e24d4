"""The README's "Documentation" list links every page under docs/ exactly once, in one
consistent form (``- [Title](docs/page.md): what it covers``), wrapped within 100 columns."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENTRY = re.compile(r"^- \[[^\]]+\]\((docs/[\w.-]+\.md)\): \S")


def documentation_section() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.strip().splitlines() if line]


def test_every_docs_page_is_linked_once_from_the_documentation_list() -> None:
    linked = [m.group(1) for line in documentation_section() if (m := ENTRY.match(line))]
    pages = sorted(f"docs/{page.name}" for page in (REPO / "docs").glob("*.md"))
    assert sorted(linked) == pages


def test_the_documentation_list_is_entries_and_their_indented_continuations() -> None:
    lines = documentation_section()
    odd = [line for line in lines if not (ENTRY.match(line) or re.match(r"^  \S", line))]
    assert not odd
    assert all(len(line) <= 100 for line in lines)
