"""A stand-in for Nebula's app package (process tests only)."""
