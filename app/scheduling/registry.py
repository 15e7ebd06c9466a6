"""Finding scheduler plugins by name: the built-in ones, then the ``nebula.schedulers`` entry points.

The built-ins are listed here explicitly; other packages add plugins through the entry
point group (``name = package.module:Class``). A name found in both is the entry point's,
so a deployment can replace a built-in.
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points

from app.errors import RequestParameterInvalid
from app.scheduling.plugin import Scheduler
from app.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nebula.schedulers"
BUILTIN = {
    "core": "app.scheduling.core:CoreScheduler",
    "fair_share": "app.scheduling.fair_share:FairShareScheduler",
}

_lock = threading.Lock()
_targets: dict[str, str] | None = None
# (name, id(settings)) → (settings, plugin); holding the settings keeps their id from being reused.
_instances: dict[tuple[str, int], tuple[Settings, Scheduler]] = {}


def _all_targets() -> dict[str, str]:
    """Plugin name → 'module:Class', read once per process."""
    global _targets
    with _lock:
        if _targets is None:
            targets = dict(BUILTIN)
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                targets[ep.name] = ep.value
            _targets = targets
        return _targets


def scheduler_names() -> list[str]:
    """Every registered plugin name, sorted."""
    return sorted(_all_targets())


def resolve_name(requested: str | None, settings: Settings) -> str:
    """The plugin an invocation will use: the one asked for, else the configured default (400 if unknown)."""
    name = requested or settings.default_scheduler
    if name not in _all_targets():
        known = ", ".join(scheduler_names())
        raise RequestParameterInvalid(f"scheduler: unknown scheduler {name!r} (known: {known})")
    return name


def get_scheduler(name: str, settings: Settings) -> Scheduler:
    """The process's instance of a plugin (built on first use)."""
    key = (name, id(settings))
    with _lock:
        cached = _instances.get(key)
    if cached is not None and cached[0] is settings:
        return cached[1]
    target = _all_targets().get(name)
    if target is None:
        raise LookupError(f"no scheduler plugin named {name!r}")
    module_name, _, attr = target.partition(":")
    plugin_class = getattr(importlib.import_module(module_name), attr)
    instance = plugin_class(settings)
    with _lock:
        _instances[key] = (settings, instance)
        return instance
