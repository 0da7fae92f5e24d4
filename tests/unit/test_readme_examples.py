"""Examples in the README (and docs/) are what the code prints: each documented check-config
run is repeated on its config and must print exactly the documented lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A ```yaml block whose first line names the file, then the ```text block check-config prints.
EXAMPLE = re.compile(r"```yaml\n(# gateway\.yaml, [^\n]*\n.*?)```\n\n```text\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for index, match in enumerate(EXAMPLE.finditer(page.read_text())):
            found.append((f"{page.name}#{index}", match.group(1), match.group(2)))
    return found


def test_the_docs_have_a_check_config_example() -> None:
    assert any(name.startswith("configuration.md") for name, _, _ in examples())


@pytest.mark.parametrize(("name", "config", "expected"), examples(), ids=lambda v: str(v)[:20])
def test_a_documented_check_config_output_is_what_the_code_prints(
    name: str, config: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / "gateway.yaml").write_text(config)
    for line in config.splitlines():  # the files it names exist (placeholders)
        if (found := re.match(r"\s+(?:ca|cert|key): (\S+)", line)) is not None:
            (tmp_path / found.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / found.group(1)).write_text("placeholder")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", "gateway.yaml"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr == expected, f"{name} is out of date; the code prints:\n{result.stderr}"


DESIRED = re.compile(r"```text\n\$ edge-gateway desired ([^\n]*)\n(.*?)```", re.S)


def desired_examples() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for page in PAGES for m in DESIRED.finditer(page.read_text())]


def test_the_docs_have_a_desired_refusal_example() -> None:
    assert desired_examples()


@pytest.mark.parametrize(("args", "expected"), desired_examples())
def test_a_documented_desired_refusal_is_what_the_demo_config_refuses(
    args: str, expected: str
) -> None:
    from gateway.cli.desired import DesiredRefused, check_before_sending, parse_assignment
    from gateway.cli.failures import describe

    desired = dict(parse_assignment(item) for item in args.split())
    with pytest.raises(DesiredRefused) as caught:
        check_before_sending(REPO / "config" / "demo.yaml", desired)
    lines, code = describe(caught.value)
    assert code == 1
    assert "\n".join(lines) + "\n" == expected
