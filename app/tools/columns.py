"""Column numbers as Galaxy's data_column parameters take them: "2", 2 or "c2"; lists as "1,3".

Galaxy's ColumnListParameter.from_json strips a leading "c" (labels read "c1", "c2" …)
and, for a multiple parameter, splits text on commas and newlines. Values are kept as
Galaxy keeps them: the number as text ("2"), a list of such for ``multiple``.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"^[1-9][0-9]*$")


def strip_c(text: str) -> str:
    """'c2' → '2' (Galaxy's labels); anything else unchanged but stripped."""
    text = text.strip()
    if len(text) > 1 and text[0] in "cC" and text[1:].isdigit():
        return text[1:]
    return text


def parse_column(raw: Any) -> str:
    """One column number as text ('2'); ValueError saying why for anything else."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError(f"{_short(raw)} is not a column number")
    text = strip_c(str(raw))
    if not _NUMBER.match(text):
        raise ValueError(f"{_short(raw)} is not a column number (columns count from 1)")
    return text


def parse_columns(raw: Any) -> list[str]:
    """Several column numbers from a list, or from text split on commas and newlines."""
    items = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(parse_column(part) for part in re.split(r"[,\n]", item) if part.strip())
        else:
            out.append(parse_column(item))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
