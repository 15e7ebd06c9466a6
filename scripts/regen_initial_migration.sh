#!/usr/bin/env bash
# Development helper, until Nebula's first release: rewrite the single initial migration
# from the models. After a release, add migrations with `alembic revision --autogenerate`.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f app/migrations/versions/0001_*.py
tmp=$(mktemp -d)
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from app.db import make_engine
from app.migrate import alembic_config
engine = make_engine(f"sqlite:///{sys.argv[1]}/regen.sqlite")
with engine.begin() as conn:
    command.revision(alembic_config(conn), message="initial", autogenerate=True, rev_id="0001")
PY
rm -rf "$tmp"
ls app/migrations/versions/
