"""Running tools other than upload1, and fetches into collections (filled in by the tools work)."""

from __future__ import annotations

from typing import Any

from app.errors import NotFound, RequestParameterInvalid


def run(ctx, history, body) -> dict[str, Any]:
    """Run a tool by id."""
    raise NotFound(f"tool {body.tool_id!r} not found")


def fetch_collection(ctx, history, body, files) -> dict[str, Any]:
    """Fetch elements into a collection."""
    raise RequestParameterInvalid("only 'hdas' fetch destinations are supported")
