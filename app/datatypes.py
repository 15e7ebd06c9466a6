"""Datatype sniffing and metadata: extension, line count, peek, blurb."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.datatypes_registry import is_subtype
from app.datatypes_tabular import tabular_metadata

SNIFF_BYTES = 64 * 1024
PEEK_LINES = 5
PEEK_WIDTH = 256
_INT = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class FileMetadata:
    """What Nebula records about a dataset's file."""

    extension: str
    line_count: int
    file_size: int
    peek: str
    blurb: str
    metadata: dict[str, Any] = field(default_factory=dict)  # Galaxy's columns … of tabular types


def _sample_lines(path: Path) -> list[str]:
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(head) == SNIFF_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut
    return [line for line in lines if line.strip()]


def _is_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"\x00" in handle.read(SNIFF_BYTES)


def sniff(path: Path) -> str:
    """The extension of a file's content, trying Galaxy's common formats, else 'txt'."""
    if path.stat().st_size == 0:
        return "txt"
    if _is_binary(path):
        return "data"
    lines = _sample_lines(path)
    if not lines:
        return "txt"
    first = lines[0]
    if first.startswith(">") and len(lines) > 1:
        return "fasta"
    if first.startswith("@") and len(lines) >= 4 and lines[2].startswith("+"):
        return "fastqsanger"
    if first.lstrip().startswith(("{", "[")):
        try:
            json.loads(path.read_text())
            return "json"
        except (ValueError, UnicodeDecodeError):
            pass
    data_lines = [line for line in lines if not line.startswith(("#", "track ", "browser "))]
    if data_lines and all("\t" in line for line in data_lines):
        columns = [line.split("\t") for line in data_lines]
        counts = {len(c) for c in columns}
        if len(counts) == 1:
            if all(len(c) >= 3 and _INT.match(c[1]) and _INT.match(c[2]) and int(c[1]) <= int(c[2]) for c in columns) and not first.startswith("#"):
                return "bed"
            return "tabular"
    return "txt"


def count_lines(path: Path) -> int:
    """Number of lines (a last line without a newline counts)."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (1 if last != b"\n" else 0)


def peek(path: Path) -> str:
    """The first lines of a file, as Galaxy shows under a dataset."""
    if _is_binary(path):
        return "binary data"
    out: list[str] = []
    with path.open("rb") as handle:
        for raw in handle:
            out.append(raw.decode("utf-8", errors="replace").rstrip("\r\n")[:PEEK_WIDTH])
            if len(out) >= PEEK_LINES:
                break
    return "\n".join(out)


SMALL = 1 << 20  # files up to this size are measured from a single read


def file_metadata(path: Path, extension: str = "auto") -> FileMetadata:
    """Sniff (when the extension is 'auto') and measure a file (small ones from one read)."""
    ext = sniff(path) if extension in ("auto", "", None) else extension
    size = path.stat().st_size
    if size <= SMALL:
        data = path.read_bytes()
        binary = b"\x00" in data[:SNIFF_BYTES]
        lines = 0 if ext == "data" else data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        text_peek = "binary data" if binary else _peek_bytes(data)
    else:
        lines = count_lines(path) if ext != "data" else 0
        text_peek = peek(path)
        data = b""
    return FileMetadata(extension=ext, line_count=lines, file_size=size, peek=text_peek,
                        blurb=blurb(size, ext, lines), metadata=type_metadata(path, ext, data))


def type_metadata(path: Path, extension: str, data: bytes = b"") -> dict[str, Any]:
    """The metadata of the extension's type: column metadata for tabular types, else {}."""
    if not is_subtype(extension, "tabular"):
        return {}
    if data:
        head = data[:SNIFF_BYTES]
    else:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    if len(head) == SNIFF_BYTES:
        head = head[: head.rfind(b"\n") + 1]  # the last line may be cut
    if b"\x00" in head:
        return {}
    return tabular_metadata(head.decode("utf-8", errors="replace"))


def blurb(size: int, extension: str, lines: int) -> str:
    """Galaxy's one-line summary under a dataset."""
    if size == 0:
        return "empty"
    if extension == "data":
        return f"{size} bytes"
    return f"{lines} line{'s' if lines != 1 else ''}"


def _peek_bytes(data: bytes) -> str:
    out: list[str] = []
    start = 0
    while start < len(data) and len(out) < PEEK_LINES:
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end].decode("utf-8", errors="replace").rstrip("\r\n")[:PEEK_WIDTH])
        start = end
    return "\n".join(out)
