"""Archive writers for exports: tar, tar.gz and zip, streamed in bounded memory.

A writer takes members one at a time (``add_file`` from an open file, ``add_bytes`` for
small generated files) and never holds a member in memory. The tar.gz writer compresses
1 MiB pieces on a small thread pool (as pigz does) while the writing thread reads and
hashes the next file; at most a few pieces are in flight, so memory stays bounded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
import zipfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1 << 20
#: gzip/deflate level of exports: level 1 is several times faster than gzip's default 6
#: for a few per cent larger archives (the benchmark in bench/history_archive.py).
DEFAULT_COMPRESSLEVEL = 1


@dataclass(frozen=True)
class ArchiveFormat:
    """One archive format an export can be written in."""

    name: str
    extension: str
    mime_type: str
    kind: str  # "tar" or "zip"
    compressed: bool


FORMATS: dict[str, ArchiveFormat] = {
    "tar.gz": ArchiveFormat("tar.gz", "tar.gz", "application/x-gzip", "tar", True),
    "tgz": ArchiveFormat("tar.gz", "tar.gz", "application/x-gzip", "tar", True),
    "tar": ArchiveFormat("tar", "tar", "application/x-tar", "tar", False),
    "zip": ArchiveFormat("zip", "zip", "application/zip", "zip", True),
}


class CopyObserver(Protocol):
    """Told how many bytes of member data were copied so far (for progress)."""

    def __call__(self, nbytes: int) -> None:
        """Called after each chunk."""


class ArchiveWriter(Protocol):
    """What the exporters write through."""

    def add_file(self, arcname: str, source: BinaryIO, size: int, *, mtime: float | None = None,
                 observe: CopyObserver | None = None) -> str:
        """Copy ``size`` bytes of ``source`` into the archive; return their sha256."""

    def add_bytes(self, arcname: str, data: bytes, *, mtime: float | None = None) -> None:
        """Add a small member from memory."""

    def close(self) -> None:
        """Finish the archive (the file is complete only after this)."""

    def abort(self) -> None:
        """Stop and release everything after a failure."""


def open_writer(path: Path, fmt: ArchiveFormat, *, compresslevel: int | None = None) -> ArchiveWriter:
    """A writer for ``fmt`` creating ``path`` (compression level: DEFAULT_COMPRESSLEVEL unless given)."""
    if compresslevel is None:
        compresslevel = DEFAULT_COMPRESSLEVEL
    if fmt.kind == "zip":
        return ZipWriter(path, compresslevel)
    return TarWriter(path, compresslevel if fmt.compressed else None)


class _HashingReader(io.RawIOBase):
    """Reads at most ``size`` bytes of a source, hashing and counting them."""

    def __init__(self, source: BinaryIO, size: int, observe: CopyObserver | None):
        self.source = source
        self.left = size
        self.sha256 = hashlib.sha256()
        self.observe = observe
        self.done = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.source.read(n) if n else b""
        self.left -= len(data)
        self.done += len(data)
        self.sha256.update(data)
        if self.observe is not None and data:
            self.observe(self.done)
        return data


class TarWriter:
    """tar or tar.gz (gzip compressed in a background thread)."""

    def __init__(self, path: Path, compresslevel: int | None):
        self.raw = path.open("wb")
        self.sink: _ParallelGzip | None = None
        out: BinaryIO = self.raw
        if compresslevel is not None:
            self.sink = _ParallelGzip(self.raw, compresslevel)
            out = self.sink  # type: ignore[assignment]
        self.tar = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK)

    def _info(self, arcname: str, size: int, mtime: float | None) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.size = size
        info.mode = 0o644
        info.mtime = int(mtime if mtime is not None else time.time())
        info.type = tarfile.REGTYPE
        return info

    def add_file(self, arcname: str, source: BinaryIO, size: int, *, mtime: float | None = None,
                 observe: CopyObserver | None = None) -> str:
        reader = _HashingReader(source, size, observe)
        self.tar.addfile(self._info(arcname, size, mtime), reader)
        if reader.done != size:
            raise OSError(f"{arcname}: the file shrank while it was archived")
        return reader.sha256.hexdigest()

    def add_bytes(self, arcname: str, data: bytes, *, mtime: float | None = None) -> None:
        self.tar.addfile(self._info(arcname, len(data), mtime), io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()
        if self.sink is not None:
            self.sink.close()
        self.raw.close()

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()
        self.raw.close()


class _ParallelGzip(io.RawIOBase):
    """A write-only gzip stream compressed on a small thread pool, as pigz does.

    The stream is cut into ``PIECE``-sized pieces, each compressed as a gzip member of its
    own (zlib releases the GIL, so pieces compress on all cores while the writing thread
    reads and hashes the next file); members are written in order, and concatenated gzip
    members are one valid gzip file (RFC 1952). At most ``2 × threads`` pieces are in
    flight, which bounds the memory whatever the archive's size.
    """

    PIECE = 1 << 20

    def __init__(self, raw: BinaryIO, compresslevel: int, threads: int | None = None):
        self.raw = raw
        self.level = compresslevel
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="export-gzip")
        self.pending: deque[Future[bytes]] = deque()
        self.buffer = bytearray()
        self.position = 0
        self.finished = False

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def write(self, data) -> int:  # type: ignore[override]
        self.position += len(data)
        self.buffer += data
        if len(self.buffer) >= self.PIECE:  # tarfile writes 1 MiB at a time: pieces stay near PIECE
            self._submit(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def _submit(self, piece: bytes) -> None:
        self.pending.append(self.pool.submit(gzip.compress, piece, self.level, mtime=0))
        while len(self.pending) > 2 * self.threads:
            self.raw.write(self.pending.popleft().result())

    def close(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            if self.buffer or not self.position:
                self._submit(bytes(self.buffer))
                self.buffer.clear()
            while self.pending:
                self.raw.write(self.pending.popleft().result())
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        if not self.finished:
            self.finished = True
            self.pool.shutdown(wait=True, cancel_futures=True)


class ZipWriter:
    """zip with deflate, ZIP64 where needed; members are streamed."""

    def __init__(self, path: Path, compresslevel: int):
        self.compresslevel = compresslevel
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel,
                                   allowZip64=True)

    def _info(self, arcname: str, mtime: float | None) -> zipfile.ZipInfo:
        stamp = time.gmtime(mtime if mtime is not None else time.time())[:6]
        info = zipfile.ZipInfo(arcname, date_time=stamp if stamp[0] >= 1980 else (1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        # ZipFile.open(info, "w") takes the level from the ZipInfo (renamed in 3.13).
        try:
            info.compress_level = self.compresslevel  # type: ignore[attr-defined]
        except AttributeError:
            info._compresslevel = self.compresslevel  # type: ignore[attr-defined]
        info.external_attr = 0o100644 << 16
        return info

    def add_file(self, arcname: str, source: BinaryIO, size: int, *, mtime: float | None = None,
                 observe: CopyObserver | None = None) -> str:
        reader = _HashingReader(source, size, observe)
        with self.zip.open(self._info(arcname, mtime), "w", force_zip64=size > 2**31) as out:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
        if reader.done != size:
            raise OSError(f"{arcname}: the file shrank while it was archived")
        return reader.sha256.hexdigest()

    def add_bytes(self, arcname: str, data: bytes, *, mtime: float | None = None) -> None:
        self.zip.writestr(self._info(arcname, mtime), data)

    def close(self) -> None:
        self.zip.close()

    def abort(self) -> None:
        try:
            self.zip.close()
        except Exception:  # noqa: BLE001 - the partial file is removed anyway
            pass

