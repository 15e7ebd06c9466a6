"""Exports and imports: history and invocation archives, the report PDF, archive import."""
