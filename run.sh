#!/usr/bin/env bash
# Run Nebula in the background under supervisord: web, workers, scheduler and beat.
# With nothing configured it uses SQLite and the embedded SQL broker in ./database.
# Environment: NEBULA_DATA_DIR, NEBULA_BIND, NEBULA_DATABASE_URL, NEBULA_BROKER_URL,
# NEBULA_BOOTSTRAP_API_KEY (and NEBULA_CONFIG, a settings file). Stop: .venv/bin/manage stop
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
.venv/bin/manage db upgrade
.venv/bin/manage start
bind=${NEBULA_BIND:-127.0.0.1:8080}
for _ in $(seq 1 120); do
  if .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen('http://$bind/api/version', timeout=2)" 2>/dev/null; then
    echo "Nebula is running at http://$bind  (stop it with: .venv/bin/manage stop)"
    exit 0
  fi
  sleep 0.5
done
echo "Nebula did not answer on http://$bind/api/version within 60 s; see .venv/bin/manage status and the logs in ${NEBULA_DATA_DIR:-./database}/logs" >&2
exit 1
