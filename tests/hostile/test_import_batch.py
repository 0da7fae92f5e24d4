"""Hostile Thing Batch zips and folders given to ``edge-gateway import-batch``: each is refused
with a message naming what is wrong, exits 1 without a traceback, and writes nothing (no
credential, no provisioned.yaml, no file outside the state folder)."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.provisioning import certs
from gateway.provisioning.batch import MAX_MEMBER_BYTES

CA_PEM, CA_KEY_PEM = certs.create_ca("batch test CA")
CA_CERT = certs.load_certificate(CA_PEM, "ca")
CA_KEY = certs.load_private_key(CA_KEY_PEM, "ca key")
[THING] = certs.thing_batch(CA_CERT, CA_KEY, ["00000001"])


def member(
    name: str, data: bytes, mode: int = stat.S_IFREG | 0o644
) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def good_members() -> list[tuple[zipfile.ZipInfo, bytes]]:
    return [
        member("00000001/cert.pem", THING.cert_pem),
        member("00000001/privkey.pem", THING.key_pem, stat.S_IFREG | 0o600),
    ]


def write_zip(path: Path, members: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def run_import(tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """import-batch into tmp_path/state: must exit 1 and write nothing; returns stderr."""
    ca = tmp_path / "broker-ca.pem"
    ca.write_bytes(CA_PEM)
    code = main(
        ["import-batch", str(source), "--ca", str(ca), "--state-dir", str(tmp_path / "state")]
    )
    captured = capsys.readouterr()
    assert code == 1, captured
    assert "Traceback" not in captured.err and "PRIVATE KEY" not in captured.err
    assert not (tmp_path / "state").exists()
    return captured.err


def test_a_well_formed_zip_is_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The baseline the hostile variants below differ from.
    source = write_zip(tmp_path / "batch.zip", good_members())
    ca = tmp_path / "broker-ca.pem"
    ca.write_bytes(CA_PEM)
    state = tmp_path / "state"
    assert main(["import-batch", str(source), "--ca", str(ca), "--state-dir", str(state)]) == 0
    assert (state / "certs" / "privkey.pem").read_bytes() == THING.key_pem
    assert "thing: '00000001'" in (state / "provisioned.yaml").read_text()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../00000001/cert.pem", "'..'"),
        ("00000001/../../escape.pem", "'..'"),
        ("/etc/00000001/cert.pem", "absolute path"),
        ("C:/00000001/cert.pem", "absolute path"),
        ("00000001\\..\\cert.pem", "backslash"),
    ],
)
def test_a_member_path_leaving_the_folder_refuses_the_zip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, reason: str
) -> None:
    source = write_zip(tmp_path / "batch.zip", [*good_members(), member(name, b"x")])
    error = run_import(tmp_path, source, capsys)
    assert "refused" in error and reason in error
    assert not (tmp_path.parent / "escape.pem").exists()


def test_a_symlink_member_refuses_the_zip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = member("00000001/privkey.pem", b"/etc/shadow", stat.S_IFLNK | 0o777)
    source = write_zip(tmp_path / "batch.zip", [good_members()[0], link])
    assert "is a symbolic link" in run_import(tmp_path, source, capsys)


def test_a_member_declaring_a_huge_size_refuses_the_zip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = member("00000001/notes.txt", b"\0" * (MAX_MEMBER_BYTES * 16))
    source = write_zip(tmp_path / "batch.zip", [*good_members(), huge])
    assert "declares" in run_import(tmp_path, source, capsys)


def test_a_member_that_unpacks_beyond_its_declared_size_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A zip bomb's trick: the directory says 20 bytes, the data inflates to 1 MB.
    bomb = member("00000001/cert.pem", b"A" * (1024 * 1024))
    source = write_zip(tmp_path / "batch.zip", [bomb, good_members()[1]])
    data = bytearray(source.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the bomb's central directory entry comes first
    data[entry + 24 : entry + 28] = (20).to_bytes(4, "little")  # its uncompressed size
    source.write_bytes(bytes(data))
    error = run_import(tmp_path, source, capsys)
    assert "cert.pem" in error


def test_an_encrypted_member_refuses_the_zip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_zip(tmp_path / "batch.zip", good_members())
    data = bytearray(source.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the key's central directory entry comes last
    data[entry + 8] |= 0x1  # general purpose flag bit 0: encrypted
    source.write_bytes(bytes(data))
    assert "encrypted" in run_import(tmp_path, source, capsys)


def test_a_member_appearing_twice_refuses_the_zip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate
        source = write_zip(
            tmp_path / "batch.zip", [*good_members(), member("00000001/cert.pem", b"other")]
        )
    assert "appears twice" in run_import(tmp_path, source, capsys)


def test_something_that_is_not_a_zip_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "batch.zip"
    source.write_bytes(b"PK\x03\x04 not really" * 100)
    assert "not a zip file" in run_import(tmp_path, source, capsys)


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [other] = certs.thing_batch(CA_CERT, CA_KEY, ["00000002"])
    source = write_zip(
        tmp_path / "batch.zip",
        [good_members()[0], member("00000001/privkey.pem", other.key_pem)],
    )
    assert "does not belong to" in run_import(tmp_path, source, capsys)


def test_a_folder_name_that_is_no_thing_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_zip(
        tmp_path / "batch.zip",
        [member("a b/cert.pem", THING.cert_pem), member("a b/privkey.pem", THING.key_pem)],
    )
    assert "not a valid thing name" in run_import(tmp_path, source, capsys)


@pytest.mark.parametrize(
    "plant",
    [
        lambda folder, target: (folder / "privkey.pem").symlink_to(target),
        lambda folder, target: os.mkfifo(folder / "privkey.pem"),
    ],
    ids=["symlink", "fifo"],
)
def test_an_unpacked_folder_with_a_link_or_special_file_for_a_key_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    plant: Callable[[Path, Path], None],
) -> None:
    folder = tmp_path / "unpacked" / "00000001"
    folder.mkdir(parents=True)
    (folder / "cert.pem").write_bytes(THING.cert_pem)
    target = tmp_path / "elsewhere.pem"
    target.write_bytes(THING.key_pem)
    plant(folder, target)
    assert "refused" in run_import(tmp_path, tmp_path / "unpacked", capsys)


def test_zip_bytes_are_never_extracted_next_to_it(tmp_path: Path) -> None:
    # import-batch reads members into memory only: the folder holding the zip stays as it was.
    source = write_zip(tmp_path / "batch.zip", good_members())
    ca = tmp_path / "broker-ca.pem"
    ca.write_bytes(CA_PEM)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert (
        main(["import-batch", str(source), "--ca", str(ca), "--state-dir", str(tmp_path / "s")])
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "s"])


def test_a_zip_declaring_more_members_than_accepted_is_refused_before_they_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_zip(tmp_path / "batch.zip", good_members())
    data = bytearray(source.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = (60_000).to_bytes(2, "little") * 2  # entries here / in total
    source.write_bytes(bytes(data))
    assert "declares 60000 members" in run_import(tmp_path, source, capsys)


def test_folder_names_that_are_no_thing_names_are_counted_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = "\x1b]0;owned\x07\x1b[2J"  # terminal escapes: retitle, clear the screen
    members = [
        *good_members(),
        member(f"{evil}/cert.pem", THING.cert_pem),
        member(f"{evil}/privkey.pem", THING.key_pem),
    ]
    source = write_zip(tmp_path / "batch.zip", members)
    error = run_import(tmp_path, source, capsys)
    assert "00000001" in error and "1 folder(s) whose names are no thing names" in error
    assert "\x1b" not in error
