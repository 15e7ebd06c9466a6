"""Reading untrusted archives: tar, tar.gz and zip, member by member, refusing anything hostile.

No member name is ever used as a path: each regular file is copied into the staging
directory under a name of our own (``m1``, ``m2`` …), and the caller looks members up by
their archive name. Before and while copying, the reader refuses

- names that are absolute, contain ``..`` or a backslash or NUL, or repeat;
- links (symbolic or hard), devices and FIFOs;
- more than ``max_members`` members, or more unpacked bytes than the limit: the smaller
  of ``max_total_bytes`` and ``max_ratio`` times the archive's size (but at least
  ``ratio_floor``), which stops zip and gzip bombs after at most that many bytes;
- corrupt data (bad CRC, truncated streams), as a clear ``ArchiveRejected``.
"""

from __future__ import annotations

import gzip
import hashlib
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from app.exports.errors import ArchiveRejected

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an imported archive may unpack to."""

    max_total_bytes: int = 64 << 30
    max_members: int = 200_000
    max_ratio: int = 200
    ratio_floor: int = 1 << 30
    max_manifest_bytes: int = 32 << 20

    def unpacked_limit(self, archive_size: int) -> int:
        """Most bytes an archive of ``archive_size`` bytes may unpack to."""
        return min(self.max_total_bytes, max(self.ratio_floor, self.max_ratio * archive_size))


@dataclass(frozen=True)
class StagedMember:
    """A regular file of the archive, copied into staging."""

    name: str
    path: Path
    size: int
    sha256: str


def check_member_name(name: str, *, directory: bool = False) -> str:
    """The normalised member name, or ArchiveRejected for a hostile one (``.`` is fine for a directory)."""
    if not name or "\x00" in name or "\\" in name or len(name) > 1024:
        raise ArchiveRejected(f"archive member name not allowed: {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRejected(f"archive member has an absolute path: {name!r}")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveRejected(f"archive member path contains '..': {name!r}")
    if not parts and not directory:
        raise ArchiveRejected(f"archive member name not allowed: {name!r}")
    return "/".join(parts)


class _Budget:
    def __init__(self, limit: int, max_members: int):
        self.limit = limit
        self.used = 0
        self.members = 0
        self.max_members = max_members

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ArchiveRejected(f"the archive has more than {self.max_members} members")

    def take(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise ArchiveRejected(
                f"the archive unpacks to more than {self.limit} bytes (the limit for an archive of this size); "
                "refusing it as a possible archive bomb")


def unpack(archive: Path, staging: Path, limits: ArchiveLimits | None = None) -> dict[str, StagedMember]:
    """Copy every regular file of ``archive`` into ``staging``; return them by normalised name."""
    limits = limits or ArchiveLimits()
    staging.mkdir(parents=True, exist_ok=True)
    budget = _Budget(limits.unpacked_limit(archive.stat().st_size), limits.max_members)
    with archive.open("rb") as handle:
        head = handle.read(512)
    try:
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _unpack_zip(archive, staging, budget)
        if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
            return _unpack_tar(archive, staging, budget)
    except ArchiveRejected:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as exc:
        raise ArchiveRejected(f"the archive is corrupt: {exc}") from exc
    raise ArchiveRejected("not a tar, tar.gz or zip archive")


def _copy(source: BinaryIO, target: Path, budget: _Budget, declared: int | None) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            budget.take(len(chunk))
            if declared is not None and size > declared:
                raise ArchiveRejected("an archive member is larger than its header says")
            digest.update(chunk)
            out.write(chunk)
    if declared is not None and size != declared:
        raise ArchiveRejected("the archive is corrupt: a member is truncated")
    return size, digest.hexdigest()


def _add(found: dict[str, StagedMember], raw_name: str, staging: Path, source: BinaryIO, budget: _Budget,
         declared: int | None) -> None:
    name = check_member_name(raw_name)
    if name in found:
        raise ArchiveRejected(f"the archive holds {name!r} twice")
    if declared is not None and budget.used + declared > budget.limit:
        budget.take(declared)  # raises with the message
    path = staging / f"m{len(found) + 1}"
    size, sha = _copy(source, path, budget, declared)
    found[name] = StagedMember(name, path, size, sha)


def _unpack_tar(archive: Path, staging: Path, budget: _Budget) -> dict[str, StagedMember]:
    # Stream mode: one pass, no seeking, constant memory even for tar.gz. gzip is read
    # through the gzip module, which checks the CRC and length (tarfile's own does not).
    with archive.open("rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            return _tar_members(tar, stream, staging, budget)


def _tar_members(tar: tarfile.TarFile, stream: BinaryIO, staging: Path, budget: _Budget) -> dict[str, StagedMember]:
    found: dict[str, StagedMember] = {}
    for member in tar:
        budget.member()
        if member.isdir():
            check_member_name(member.name, directory=True)
            continue
        if member.issym() or member.islnk():
            raise ArchiveRejected(f"the archive holds a link, which is not allowed: {member.name!r}")
        if not member.isreg():
            raise ArchiveRejected(f"the archive holds a special file, which is not allowed: {member.name!r}")
        source = tar.extractfile(member)
        assert source is not None
        _add(found, member.name, staging, source, budget, member.size)
    # Read what follows the end-of-archive blocks, so that gzip checks its CRC and length.
    while chunk := stream.read(CHUNK):
        budget.take(len(chunk))
    return found


def _zip_entry_count(archive: Path) -> int | None:
    """The member count the end record declares, read before zipfile parses the directory."""
    with archive.open("rb") as handle:
        end = zipfile._EndRecData(handle)  # noqa: SLF001 - no public way to see the count first
    return None if end is None else end[zipfile._ECD_ENTRIES_TOTAL]  # noqa: SLF001


def _unpack_zip(archive: Path, staging: Path, budget: _Budget) -> dict[str, StagedMember]:
    found: dict[str, StagedMember] = {}
    declared = _zip_entry_count(archive)
    if declared is not None and declared > budget.max_members:
        raise ArchiveRejected(f"the archive has more than {budget.max_members} members")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            budget.member()
            mode = info.external_attr >> 16
            if info.is_dir():
                check_member_name(info.filename, directory=True)
                continue
            if stat.S_ISLNK(mode):
                raise ArchiveRejected(f"the archive holds a link, which is not allowed: {info.filename!r}")
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                raise ArchiveRejected(f"the archive holds a special file, which is not allowed: {info.filename!r}")
            if info.flag_bits & 0x1:
                raise ArchiveRejected(f"the archive member {info.filename!r} is encrypted")
            with zf.open(info) as source:
                _add(found, info.filename, staging, source, budget, info.file_size)
    return found
