"""Importing a Thing Batch: the zip Managed IoT Cloud's App Board downloads (blocking file I/O).

The Thing API guide: "Download the zip file containing certificates and private keys. The zip
file contains a folder for each thing that was created in the batch", each thing configured
with its name (the folder's name), ``cert.pem`` and ``privkey.pem`` from its folder, the CA
certificate (downloaded separately: the broker's CA, not in the zip) and the broker's host
name. ``import_thing`` takes such a zip, or the same layout unpacked into a folder (or one
thing's folder itself), checks the chosen thing's pair and installs it as provisioning does:
key 0600 in ``state_dir/certs/``, the thing name (and the CA) in ``state_dir/provisioned.yaml``,
so a config without ``thing``, ``mqtt.cert`` and ``mqtt.key`` runs as that thing.

A zip is untrusted input. Before anything is read from it, the whole archive is refused, naming
the member, if any member has an absolute path, a ``..`` part, a backslash or a drive letter, is
a symbolic link (or any other non-regular file), is encrypted, declares more than
``MAX_MEMBER_BYTES``, or appears twice; so is an archive over ``MAX_ZIP_BYTES`` or declaring
more than ``MAX_MEMBERS`` members (checked on its end record, before ``zipfile`` reads the
directory). Nothing is ever extracted to disk: the two files of the chosen
thing are read into memory through a capped read, so a member lying about its size (a zip bomb)
is stopped at the cap too. Unpacked folders get the same care: symbolic links and non-regular
files are refused, and files are read with a cap.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from gateway.config.names import AnswerError, shown, thing_name
from gateway.config.provisioned import default_credential_paths
from gateway.errors import ProvisioningError

CERT_FILE = "cert.pem"
KEY_FILE = "privkey.pem"
CA_FILE = "ca.pem"  # the broker's CA, installed next to the pair (MIC's name for it)
MAX_ZIP_BYTES = 64 * 1024 * 1024  # a batch of thousands of things is a few MB
MAX_MEMBERS = 20_000  # two files per thing: 10,000 things
MAX_MEMBER_BYTES = 64 * 1024  # a PEM certificate or key is a few KB
MAX_LISTED = 30  # thing names shown when asking to pick one
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class BatchThing:
    """One thing of a batch: its name, certificate and private key (PEM)."""

    name: str
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # never show the key, even in a traceback's locals
        return f"BatchThing(name={self.name!r})"


# -- reading a batch -------------------------------------------------------------------------


class _Source:
    """Thing folders of a batch (name -> its files), and reading one file of one folder."""

    label: str
    folders: dict[str, set[str]]  # folder name -> the file names it holds

    def read(self, folder: str, name: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member makes the archive unacceptable, or None."""
    name = info.filename
    parts = PurePosixPath(name.rstrip("/")).parts
    if "\\" in name or "\x00" in name:
        return "has a backslash or NUL in its path"
    if name.startswith("/") or _DRIVE.match(name):
        return "has an absolute path"
    if ".." in parts:
        return "has a '..' in its path (it would land outside the folder)"
    if any(part in ("", ".") for part in name.rstrip("/").split("/")):
        return "has an empty or '.' part in its path"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if not info.is_dir() and info.file_size > MAX_MEMBER_BYTES:
        return f"declares {info.file_size} bytes, more than the {MAX_MEMBER_BYTES} a PEM file needs"
    return None


_EOCD = struct.Struct("<4s4H2LH")  # the end of central directory record
_EOCD_SIGNATURE = b"PK\x05\x06"


def _declared_members(stream: BinaryIO, size: int) -> int | None:
    """The member count the archive's end record declares (None if there is none to find),
    read before ``zipfile`` builds an object per member: a small zip can declare millions.
    A ZIP64 archive's count field says 0xFFFF: more than we accept in any case."""
    tail = min(size, _EOCD.size + 0xFFFF)  # the record and a comment of at most 64 KB
    stream.seek(size - tail)
    data = stream.read(tail)
    stream.seek(0)
    where = data.rfind(_EOCD_SIGNATURE)
    if where < 0 or where + _EOCD.size > len(data):
        return None
    fields: tuple[int, ...] = _EOCD.unpack_from(data, where)[1:]
    return max(fields[2], fields[3])  # entries on this disk, entries in total


class _ZipSource(_Source):
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ProvisioningError(f"cannot read {path}: {exc.strerror}") from exc
        stream = os.fdopen(fd, "rb")
        try:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ProvisioningError(f"{path} is not a regular file (expected a zip)")
            if info.st_size > MAX_ZIP_BYTES:
                raise ProvisioningError(
                    f"{path} is {info.st_size} bytes, more than the {MAX_ZIP_BYTES} a Thing "
                    "Batch zip may have"
                )
            declared = _declared_members(stream, info.st_size)
            if declared is not None and declared > MAX_MEMBERS:
                raise ProvisioningError(
                    f"{path}: refused: it declares {declared} members, more than the "
                    f"{MAX_MEMBERS} accepted"
                )
            self.archive = zipfile.ZipFile(stream)
            self._stream = stream
        except zipfile.BadZipFile as exc:
            stream.close()
            raise ProvisioningError(f"{path} is not a zip file ({exc})") from exc
        except OSError as exc:
            stream.close()
            raise ProvisioningError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except BaseException:
            stream.close()
            raise
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        members = self.archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise ProvisioningError(
                f"{self.label} has {len(members)} members, more than the {MAX_MEMBERS} accepted"
            )
        seen: set[str] = set()
        self.members: dict[tuple[str, str], zipfile.ZipInfo] = {}
        self.folders = {}
        for info in members:
            problem = _member_problem(info)
            if problem is None and info.filename in seen:
                problem = "appears twice"
            if problem is not None:
                raise ProvisioningError(
                    f"{self.label}: refused: member {shown(info.filename)} {problem}"
                )
            seen.add(info.filename)
            parts = PurePosixPath(info.filename).parts
            if not info.is_dir() and len(parts) == 2:  # THING/cert.pem: a thing's folder
                self.folders.setdefault(parts[0], set()).add(parts[1])
                self.members[(parts[0], parts[1])] = info

    def read(self, folder: str, name: str) -> bytes:
        info = self.members[(folder, name)]
        try:
            with self.archive.open(info) as member:
                data = member.read(MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ProvisioningError(
                f"{self.label}: {folder}/{name} cannot be read ({exc})"
            ) from exc
        except (NotImplementedError, RuntimeError) as exc:  # compression method, encryption
            raise ProvisioningError(
                f"{self.label}: {folder}/{name} is not readable: {exc}"
            ) from exc
        if len(data) > MAX_MEMBER_BYTES:
            raise ProvisioningError(
                f"{self.label}: refused: {folder}/{name} unpacks to more than "
                f"{MAX_MEMBER_BYTES} bytes (its header said {info.file_size})"
            )
        return data

    def close(self) -> None:
        self.archive.close()
        self._stream.close()  # a ZipFile given a file object leaves it open


class _FolderSource(_Source):
    """An unpacked batch (a folder of thing folders), or one thing's folder itself."""

    def __init__(self, path: Path) -> None:
        self.label = str(path)
        self.root = path
        self.folders = {}
        self.paths: dict[tuple[str, str], Path] = {}
        own = self._files(path)
        if CERT_FILE in own or KEY_FILE in own:  # the folder of one thing
            name = path.resolve().name
            self.folders[name] = own
            self.paths.update({(name, f): path / f for f in own})
            return
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name)
        except OSError as exc:
            raise ProvisioningError(f"cannot list {path}: {exc.strerror}") from exc
        for entry in entries:
            if entry.is_symlink():
                if entry.is_dir():
                    raise ProvisioningError(f"refused: {entry.path} is a symbolic link")
                continue
            if entry.is_dir(follow_symlinks=False):
                files = self._files(Path(entry.path))
                if CERT_FILE in files or KEY_FILE in files:
                    self.folders[entry.name] = files
                    self.paths.update({(entry.name, f): Path(entry.path) / f for f in files})

    @staticmethod
    def _files(folder: Path) -> set[str]:
        """The credential files of ``folder``; a symbolic link or special file in their place
        is refused."""
        found = set()
        for name in (CERT_FILE, KEY_FILE):
            path = folder / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ProvisioningError(f"cannot read {path}: {exc.strerror}") from exc
            if stat.S_ISLNK(info.st_mode):
                raise ProvisioningError(f"refused: {path} is a symbolic link")
            if not stat.S_ISREG(info.st_mode):
                raise ProvisioningError(f"refused: {path} is not a regular file")
            found.add(name)
        return found

    def read(self, folder: str, name: str) -> bytes:
        path = self.paths[(folder, name)]
        try:
            # O_NOFOLLOW: a link swapped in after the listing is refused, not followed.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as stream:
                if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                    raise ProvisioningError(f"refused: {path} is not a regular file")
                data = stream.read(MAX_MEMBER_BYTES + 1)
        except OSError as exc:
            raise ProvisioningError(f"cannot read {path}: {exc.strerror}") from exc
        if len(data) > MAX_MEMBER_BYTES:
            raise ProvisioningError(
                f"refused: {path} is larger than the {MAX_MEMBER_BYTES} bytes a PEM file needs"
            )
        return data


def _open(source: Path) -> _Source:
    if source.is_dir():
        return _FolderSource(source)
    if not source.exists():
        raise ProvisioningError(f"{source} does not exist (expected App Board's zip or a folder)")
    return _ZipSource(source)


def _is_thing_name(name: str) -> bool:
    try:
        thing_name(name)
    except AnswerError:
        return False
    return True


def _listing(folders: Iterable[str]) -> str:
    """The thing names among ``folders``, for a message; other folder names (a hostile zip's
    could hold terminal escapes) are only counted."""
    folders = list(folders)
    names = sorted(name for name in folders if _is_thing_name(name))
    others = len(folders) - len(names)
    more = len(names) - MAX_LISTED
    text = ", ".join(names[:MAX_LISTED]) + (f" ... and {more} more" if more > 0 else "")
    if others:
        text += f" (and {others} folder(s) whose names are no thing names)"
    return text


def read_thing(source: Path, thing: str | None) -> BatchThing:
    """The certificate and key of ``thing`` in ``source`` (the only one when ``thing`` is
    None); ``ProvisioningError`` listing the things when it is ambiguous or absent."""
    batch = _open(source)
    try:
        folders = batch.folders
        if not folders:
            raise ProvisioningError(
                f"{batch.label} holds no thing: expected a folder per thing with "
                f"{CERT_FILE} and {KEY_FILE} (as App Board's Thing Batch zip)"
            )
        if thing is None:
            if len(folders) > 1:
                raise ProvisioningError(
                    f"{batch.label} holds {len(folders)} things; pick one with --thing NAME: "
                    f"{_listing(folders)}"
                )
            [thing] = folders
        elif thing not in folders:
            raise ProvisioningError(
                f"{batch.label} holds no thing {shown(thing)}; its things: {_listing(folders)}"
            )
        try:
            name = thing_name(thing, "thing folder")
        except AnswerError as exc:
            raise ProvisioningError(f"{batch.label}: {exc}") from exc
        missing = [f for f in (CERT_FILE, KEY_FILE) if f not in folders[name]]
        if missing:
            raise ProvisioningError(f"{batch.label}: {name}/ has no {' and no '.join(missing)}")
        return BatchThing(name, batch.read(name, CERT_FILE), batch.read(name, KEY_FILE))
    finally:
        batch.close()


# -- checking and installing -----------------------------------------------------------------


def check_pair(thing: BatchThing, source: str) -> Any:
    """The thing's certificate, once it and its key are PEM and belong together."""
    from gateway.provisioning import certs

    where = f"{source}: {thing.name}/"
    try:
        cert = certs.load_certificate(thing.cert_pem, f"{where}{CERT_FILE}")
        key = certs.load_private_key(thing.key_pem, f"{where}{KEY_FILE}")
    except certs.CertificateError as exc:
        raise ProvisioningError(str(exc)) from exc
    if not certs.key_matches(cert, key):
        raise ProvisioningError(f"{where}{KEY_FILE} does not belong to {where}{CERT_FILE}")
    return cert


def read_broker_ca(path: Path, thing_cert: Any) -> bytes:
    """The broker's CA file (PEM), refusing what cannot be one: not a certificate, or the
    thing's own certificate given by mistake."""
    from gateway.core.credfiles import CredentialFileError, read_credential_file
    from gateway.provisioning import certs

    try:
        data = read_credential_file(path, "CA certificate")
        ca = certs.load_certificate(data, f"CA certificate {path}")
    except (CredentialFileError, certs.CertificateError) as exc:
        raise ProvisioningError(str(exc)) from exc
    if b"PRIVATE KEY" in data:
        raise ProvisioningError(f"{path} holds a private key: --ca is the broker's CA certificate")
    if ca == thing_cert:
        raise ProvisioningError(
            f"{path} is the thing's own certificate; --ca is the broker's CA (the Thing API "
            "guide's ca.pem, downloaded separately: Amazon's root CA for MIC)"
        )
    return data


@dataclass(frozen=True)
class Imported:
    thing: str
    cert: Path
    key: Path
    ca: Path


def import_thing(
    source: Path, state_dir: Path, ca: Path, *, thing: str | None = None, force: bool = False
) -> Imported:
    """Install ``thing`` of the batch ``source`` with the broker's CA ``ca`` into
    ``state_dir`` as provisioning does; ``ProvisioningError`` naming what is wrong, and then
    nothing is written."""
    from gateway.core.atomicfile import write_atomic
    from gateway.provisioning.credstore import CredentialPaths
    from gateway.provisioning.provision import NewCredentials, store

    chosen = read_thing(source, thing)
    cert = check_pair(chosen, str(source))
    ca_pem = read_broker_ca(ca, cert)
    paths = CredentialPaths(*default_credential_paths(state_dir))
    if paths.exists() and not force:
        raise ProvisioningError(f"{paths.cert} exists already; use --force to replace it")
    ca_path = paths.cert.with_name(CA_FILE)
    try:
        paths.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ProvisioningError(f"cannot create {paths.cert.parent}: {exc.strerror}") from exc
    write_atomic(ca_path, ca_pem, 0o644)
    store(
        state_dir,
        paths,
        NewCredentials(
            cert_pem=chosen.cert_pem,
            key_pem=chosen.key_pem,
            thing=chosen.name,
            host=None,
            port=None,
            method="import",
        ),
        ca=ca_path,
    )
    return Imported(chosen.name, paths.cert, paths.key, ca_path)
