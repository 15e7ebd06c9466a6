"""Tools: definitions in YAML files, loaded into a ToolBox, run as jobs.

``toolbox(settings)`` is the process's ToolBox (built-in tools plus ``settings.tool_dirs``),
loaded once and cached. ``python -m app.tools check [DIR …]`` validates tool files.
"""

from __future__ import annotations

import functools
from pathlib import Path

from app.settings import Settings
from app.tools.loader import BUILTIN_DIR, Tool, ToolBox, ToolLoadError, load_tool, load_toolbox

__all__ = ["BUILTIN_DIR", "Tool", "ToolBox", "ToolLoadError", "load_tool", "load_toolbox", "toolbox"]


_by_settings: dict[int, tuple[Settings, ToolBox]] = {}


def toolbox(settings: Settings) -> ToolBox:
    """The tools for these settings, loaded once per process."""
    entry = _by_settings.get(id(settings))
    if entry is None or entry[0] is not settings:
        box = _cached_toolbox(tuple(str(Path(d).expanduser().resolve()) for d in settings.tool_dirs))
        entry = _by_settings[id(settings)] = (settings, box)
    return entry[1]


@functools.lru_cache(maxsize=8)
def _cached_toolbox(directories: tuple[str, ...]) -> ToolBox:
    return load_toolbox([Path(d) for d in directories])
