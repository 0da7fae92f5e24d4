"""The one atomic-write helper: final mode from the start, no temp file left, errors named."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.core.atomicfile import AtomicWriteError, stage, write_atomic
from gateway.errors import GatewayError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_replaces_content_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")
    write_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_write_atomic_is_private_by_default(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    write_atomic(target, b"k")
    assert mode(target) == 0o600


def test_unsynced_write_is_still_a_whole_replacement(tmp_path: Path) -> None:
    target = tmp_path / "loadavg"
    write_atomic(target, b"0.50\n", 0o644, sync=False)
    assert target.read_bytes() == b"0.50\n" and mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["loadavg"]


def test_stage_creates_the_temp_file_with_its_final_mode(tmp_path: Path) -> None:
    staged = stage(tmp_path / "privkey.pem", b"key")
    assert staged.parent == tmp_path and staged.name.startswith(".privkey.pem.")
    assert mode(staged) == 0o600 and staged.read_bytes() == b"key"


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    (tmp_path / "dir-in-the-way").mkdir()
    with pytest.raises(AtomicWriteError, match=r"cannot write .*dir-in-the-way"):
        write_atomic(tmp_path / "dir-in-the-way", b"new")
    with pytest.raises(OSError) as failed:  # also a GatewayError: both kinds of caller see it
        write_atomic(tmp_path / "missing" / "state.json", b"new")
    assert isinstance(failed.value, GatewayError)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way", "state.json"]
