"""The runner's fast output handling gives what the general helpers give."""

from __future__ import annotations

import pytest

from app.datatypes import file_metadata
from app.jobs.outputs import measure, store_output
from app.objectstore import ObjectStore

SAMPLES = [
    b"", b"a", b"a\n", b"a\nb", b"a\r\nb\r\n", b"x\ty\n1\t2\n", b"chr1\t1\t5\n", b">s\nACGT\n",
    b"\x00\x01binary", "é\nü\n".encode(), b"\n\n\n", b"l\n" * 20, ("w" * 300 + "\n").encode(), b"{\"a\": 1}\n",
    b"\xff\xfe broken utf8\n",
]


@pytest.mark.parametrize("data", SAMPLES)
@pytest.mark.parametrize("extension", ["auto", "txt", "tabular", "data"])
def test_measure_equals_file_metadata(tmp_path, data, extension):
    path = tmp_path / "f"
    path.write_bytes(data)
    assert measure(path, extension) == file_metadata(path, extension)


def test_store_output_moves_the_file_to_the_stores_key(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    source = tmp_path / "out"
    source.write_bytes(b"x")
    key, path = store_output(store, 1234, source)
    assert key == store.key_for(1234) and path == store.path(key) and path.read_bytes() == b"x"
    assert not source.exists()
    again = tmp_path / "again"
    again.write_bytes(b"y")
    assert store_output(store, 1234, again)[1].read_bytes() == b"y"
