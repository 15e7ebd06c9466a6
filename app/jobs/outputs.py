"""A job's output files: into the object store with one rename, measured with one read.

Both are hot paths (a trivial job spends more time on file system calls than running):
``store_output`` skips what ``ObjectStore.put`` does for any caller (resolving paths,
renaming twice); measuring is ``datatypes.file_metadata``, which reads a small file once.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.datatypes import FileMetadata, file_metadata
from app.objectstore import ObjectStore

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
    """Extension, line count, size, peek and blurb of a job's output."""
    return file_metadata(path, extension)
