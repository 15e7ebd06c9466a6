"""Workflow descriptions: reading .ga and gxformat2, validating, exporting, and the cached plan.

- ``formats``: any accepted description (native dict, gxformat2 dict or YAML text) → native dict.
- ``parse``: a native dict → a validated ``ParsedWorkflow`` (clear 400s for bad input).
- ``plan``: the immutable, cached view of a stored version that schedulers work from.
- ``export``: a stored version → ``.ga`` or gxformat2.
- ``toolspec``: what a workflow needs to know of a tool (its data inputs and outputs).
"""
