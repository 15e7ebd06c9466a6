"""Structured logging for every Nebula process: JSON lines (or a console rendering)."""

from __future__ import annotations

import logging
import sys

import structlog

from app.settings import Settings

_configured: set[str] = set()


def configure_logging(settings: Settings, process: str) -> None:
    """Route stdlib logging through structlog's renderer; ``extra=`` fields become keys."""
    if process in _configured:
        return
    _configured.add(process)
    renderer = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            lambda _l, _m, event: {**event, "process": process},
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_nebula", False):
            root.removeHandler(old)
    handler._nebula = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("pika").setLevel(logging.WARNING)
