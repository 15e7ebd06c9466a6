"""Errors of exports and imports that are final: retrying would fail the same way."""

from __future__ import annotations


class ExportError(Exception):
    """An export or import cannot be done; the message says why, for the user."""


class ArchiveRejected(ExportError):
    """An archive given for import is corrupt, hostile or too large."""
