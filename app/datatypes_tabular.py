"""Column metadata of tab-separated datasets: ``columns``, ``column_types``, ``column_names``.

Galaxy sets these on every dataset of a Tabular type; tools read them (``data_column``
parameters are checked against ``columns``, ``numerical`` ones against ``column_types``)
and so do templates (``{{ input.metadata.columns }}``). They are guessed from the first
``SAMPLE_LINES`` lines (the whole of a small file), as Galaxy guesses from a sample.
"""

from __future__ import annotations

import re
from typing import Any

SAMPLE_LINES = 1000
_INT = re.compile(r"^[+-]?\d+$")
# Galaxy's column types, weakest first: a column is the strongest type any of its fields has.
_ORDER = ("int", "float", "list", "str")


def field_type(field: str) -> str | None:
    """'int', 'float', 'list' (comma-separated) or 'str' for one field; None for an empty one."""
    if not field:
        return None
    if _INT.match(field):
        return "int"
    try:
        float(field)
        return "float"
    except ValueError:
        pass
    return "list" if "," in field else "str"


def _merge(types: list[str | None], fields: list[str]) -> list[str | None]:
    out = list(types) + [None] * (len(fields) - len(types))
    for index, field in enumerate(fields):
        kind = field_type(field)
        if kind is not None and (out[index] is None or _ORDER.index(kind) > _ORDER.index(out[index])):
            out[index] = kind
    return out


def tabular_metadata(text: str) -> dict[str, Any]:
    """The column metadata of tab-separated text ({} when there is no data line)."""
    comments: list[str] = []
    rows: list[list[str]] = []
    for line in text.splitlines()[: SAMPLE_LINES]:
        if not line.strip():
            continue
        if line.startswith("#") and not rows:
            comments.append(line)
            continue
        if not line.startswith("#"):
            rows.append(line.split("\t"))
    if not rows:
        return {}
    columns = max(len(r) for r in rows)
    names = None
    body = rows
    if len(rows) > 1 and _looks_like_header(rows[0], rows[1:]):
        names, body = rows[0], rows[1:]
    elif comments and len(comments[-1].lstrip("#").split("\t")) == columns:
        names = comments[-1].lstrip("#").split("\t")
    types: list[str | None] = []
    for row in body:
        types = _merge(types, row)
    out: dict[str, Any] = {"columns": columns,
                           "column_types": [t or "str" for t in types + [None] * (columns - len(types))]}
    if names is not None:
        out["column_names"] = [n.strip() for n in names] + [""] * (columns - len(names))
    return out


def _looks_like_header(first: list[str], rest: list[list[str]]) -> bool:
    """A first line of words over numeric columns is a header (Galaxy's guess, too)."""
    types: list[str | None] = []
    for row in rest:
        types = _merge(types, row)
    numeric = [i for i, t in enumerate(types) if t in ("int", "float")]
    return bool(numeric) and all(i < len(first) and field_type(first[i]) == "str" for i in numeric)
