"""The module Dramatiq's worker processes import: it sets the broker, then loads the actors.

``python -m workers.run`` starts ``dramatiq workers.main`` with the right queues.
"""

from workers.runtime import build_runtime

runtime = build_runtime()
broker = runtime.broker
