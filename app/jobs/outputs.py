"""A job's output files: into the object store with one rename, measured with one read.

Both are hot paths (a trivial job spends more time on file system calls than running), so
they avoid what the general helpers do for any caller: ``ObjectStore.put`` resolves paths
and renames twice, ``datatypes.file_metadata`` opens the file once per figure. The results
are the same (a test holds them equal).
"""

from __future__ import annotations

import os
from pathlib import Path

from app.datatypes import PEEK_LINES, PEEK_WIDTH, SNIFF_BYTES, FileMetadata, file_metadata, sniff
from app.objectstore import ObjectStore

SMALL = 1 << 20  # files up to this size are measured from one read


def store_output(store: ObjectStore, dataset_id: int, source: Path) -> tuple[str, Path]:
    """Move a finished output into the store (atomic rename); return its key and path."""
    key = store.key_for(dataset_id)
    target = store.root / key
    try:
        os.replace(source, target)
    except FileNotFoundError:
        if not source.exists():
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    except OSError:  # another file system: the store's own careful copy
        key = store.put(dataset_id, source)
        target = store.path(key)
    return key, target


def measure(path: Path, extension: str) -> FileMetadata:
    """Extension, line count, size, peek and blurb of a file, as ``datatypes.file_metadata`` gives them."""
    size = path.stat().st_size
    if size > SMALL:
        return file_metadata(path, extension)
    data = path.read_bytes()
    ext = sniff(path) if extension in ("auto", "", None) else extension
    binary = b"\x00" in data[:SNIFF_BYTES]
    lines = 0
    if ext != "data":
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if size == 0:
        blurb = "empty"
    elif ext == "data":
        blurb = f"{size} bytes"
    else:
        blurb = f"{lines} line{'s' if lines != 1 else ''}"
    return FileMetadata(extension=ext, line_count=lines, file_size=size, peek=_peek(data, binary), blurb=blurb)


def _peek(data: bytes, binary: bool) -> str:
    if binary:
        return "binary data"
    out = []
    start = 0
    while start < len(data) and len(out) < PEEK_LINES:
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end].decode("utf-8", errors="replace").rstrip("\r\n")[:PEEK_WIDTH])
        start = end
    return "\n".join(out)
