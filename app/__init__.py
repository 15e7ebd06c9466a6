"""Nebula: a Galaxy-style workflow and task server."""
