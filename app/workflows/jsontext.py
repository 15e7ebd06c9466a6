"""Galaxy's mappings stored as JSON text: a step's tool_state, its post-job actions and their arguments."""

from __future__ import annotations

import json
from typing import Any


def json_mapping(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a dict, JSON text decoded first; a ValueError naming ``what`` otherwise."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a mapping")
    return value
