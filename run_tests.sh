#!/usr/bin/env bash
# Run the whole test suite (arguments go to pytest). Tests needing PostgreSQL or RabbitMQ
# skip when those are not running, unless NEBULA_REQUIRE_SERVICES=1 (as in CI).
set -euo pipefail
cd "$(dirname "$0")"
NEBULA_VENV_EXTRAS=test source scripts/venv.sh
exec .venv/bin/python -m pytest "$@"
