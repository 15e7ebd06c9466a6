"""Workflow descriptions: reading .ga and gxformat2, validating, exporting, and the cached plan.

- ``formats``: any accepted description (native dict, gxformat2 dict or YAML text) → native dict.
- ``parse``: a native dict → a validated ``ParsedWorkflow`` (clear 400s for bad input);
  ``graph`` holds the checks of its connections (missing steps or outputs, cycles).
- ``plan``: the immutable, cached view of a stored version that schedulers work from.
- ``export``: a stored version → ``.ga`` or gxformat2.
- ``toolspec``: what a workflow needs to know of a tool (its data inputs and outputs).
- ``inputs``: an invoke request's inputs and parameters, checked against a plan.
- ``invocation_views`` and ``report``: the API shapes and the markdown report of invocations.
"""
