"""Background scheduling of workflow invocations.

``driver.advance_invocation`` is what a scheduler process runs for each
``advance_invocation`` message: it takes the invocation's lease, lets the invocation's
scheduler plugin run one iteration (``run.InvocationRun``), commits, and releases. Plugins
implement ``plugin.Scheduler`` and are found by ``registry`` (built-ins plus the
``nebula.schedulers`` entry point group). ``driver.sweep`` is beat's safety net.
"""
