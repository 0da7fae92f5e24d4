"""Attack (issue 19): a YAML alias bomb ("billion laughs") as the config file.

Was: 45 s and 4 GB of memory before ``MemoryError`` (a traceback), in ``check-config`` and
``run`` alike.

Now: the composer adds up what each node stands for once its aliases are expanded and stops at
the first node over ``MAX_NODES``, before anything is built; the error names the file, the line
and what was expected, like every config error, and both commands exit 2 without a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from gateway.config.yamlsource import MAX_NODES, MAX_YAML_BYTES, load_yaml
from gateway.errors import ConfigError

LAUGHS = 9  # levels: 9**9 = 387,420,489 strings once expanded


def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, LAUGHS):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# The first level standing for more than MAX_NODES values: a5 (9**6 = 531,441), line 6 col 5.
EXPECTED = f"6:5: invalid YAML: its aliases expand to more than {MAX_NODES} values"


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_alias_bomb_config_is_refused_by_check_config_and_run_with_its_line(
    tmp_path: Path, command: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(billion_laughs())
    assert path.stat().st_size < 1024  # a few hundred bytes
    args = [sys.executable, "-m", "gateway", command, "-c", str(path)]
    # The timeout only keeps a regression from hanging the suite; nothing here measures time.
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2  # a bad config, not a crash (1) or a kill
    assert result.stderr == f"{path}:{EXPECTED} (expected a config, not an alias bomb)\n"
    assert "Traceback" not in result.stdout + result.stderr


def test_alias_bomb_is_refused_before_anything_is_expanded(tmp_path: Path) -> None:
    """Bounded by construction: the composer holds the file's few dozen nodes and one count per
    node; nothing is expanded, so memory stays that of a small file."""
    path = tmp_path / "gateway.yaml"
    path.write_text(billion_laughs())
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_yaml(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.problems == [f"{path}:{EXPECTED} (expected a config, not an alias bomb)"]
    assert peak < 2 * 1024 * 1024


def test_config_file_bigger_than_the_cap_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    with path.open("wb") as sparse:
        sparse.truncate(3 * 1024**3)  # 3 GB that is never written nor read
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"{path}: file is {3 * 1024**3} bytes, more than the {MAX_YAML_BYTES} allowed\n"
    )
