"""The object store: dataset files under the data dir, addressed by dataset id."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class ObjectStore:
    """A disk object store; files are written elsewhere and moved in atomically."""

    def __init__(self, root: Path):
        self.root = root

    def key_for(self, dataset_id: int) -> str:
        """The object key of a dataset: a path relative to the store's root."""
        return f"{dataset_id // 1000:06d}/dataset_{dataset_id}.dat"

    def path(self, key: str) -> Path:
        """The absolute path of an object key (keys never leave the root)."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    def put(self, dataset_id: int, source: Path) -> str:
        """Move (or copy across devices) a finished file into the store; return its key."""
        key = self.key_for(dataset_id)
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        try:
            os.replace(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return key

    def delete(self, key: str | None) -> None:
        """Remove an object if it exists."""
        if key:
            self.path(key).unlink(missing_ok=True)
