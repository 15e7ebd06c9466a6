#!/usr/bin/env bash
# Raise RabbitMQ's delivery acknowledgement timeout (consumer_timeout, 30 min by default)
# where Nebula holds messages unacknowledged for long:
#   - jobs and exports: a message runs for up to job_wall_time / export_time_limit, and a
#     prefetched one waits behind it, unacknowledged, meanwhile;
#   - the delay queues (*.DQ): Dramatiq holds a delayed message unacknowledged until it is due.
# When the timeout fires RabbitMQ closes the channel and requeues every message on it: work
# done twice, and a long delay that never becomes due.
#
# RabbitMQ 3.12 and later set it per queue with a policy (this script). Older servers (Debian
# 12 ships 3.10) only have the global consumer_timeout in rabbitmq.conf; install-services.sh
# sets that one (see rabbitmq.conf here).
#
# Usage: consumer-timeout.sh [VHOST]   (idempotent; exit 3 when the server is too old)
set -euo pipefail
vhost=${1:-nebula}
long_tasks_ms=${LONG_TASKS_TIMEOUT_MS:-21600000}  # 6 h
delays_ms=${DELAYS_TIMEOUT_MS:-604800000}         # 7 days, Dramatiq's longest retry backoff

set_policy() {  # name priority pattern timeout
  rabbitmqctl -q set_policy -p "$vhost" --apply-to queues --priority "$2" "$1" "$3" \
    "{\"consumer-timeout\": $4}" 2>&1
}

if ! out=$(set_policy nebula-delays 15 '\.DQ$' "$delays_ms"); then
  if grep -q "consumer-timeout\|consumer_timeout\|[Vv]alidation failed" <<<"$out"; then
    echo "RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?') has no per-queue consumer-timeout (3.12+);" \
         "raise the global consumer_timeout in rabbitmq.conf instead (deploy/rabbitmq/rabbitmq.conf)" >&2
    exit 3
  fi
  echo "$out" >&2
  exit 1
fi
# a queue takes the policy of highest priority only: these patterns do not overlap with
# the dead-letter policy (\.XQ$), and jobs/exports here are the queues themselves
set_policy nebula-long-tasks 20 '(jobs|exports)$' "$long_tasks_ms" >/dev/null
echo "consumer-timeout policies set on vhost $vhost: long tasks ${long_tasks_ms} ms, delays ${delays_ms} ms"
