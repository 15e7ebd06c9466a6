#!/usr/bin/env bash
# Install and start PostgreSQL and RabbitMQ on Debian for Nebula, then print the two settings
# (database_url, broker_url) for the nebula: section of the settings file.
#
# Run as root. Safe to run again: existing roles, databases, vhosts and users are kept
# (a password given again is set again). Everything is optional in the environment:
#
#   PG_DB=nebula PG_USER=nebula PG_PASSWORD=<generated>        the database and its owner
#   RMQ_VHOST=nebula RMQ_USER=nebula RMQ_PASSWORD=<generated>   the vhost and its user
#   SKIP_APT=1              do not apt-get install (the packages are there already)
#   RMQ_GLOBAL_TIMEOUT=skip leave rabbitmq.conf alone on RabbitMQ < 3.12 (see rabbitmq/)
#
# A second host (workers or schedulers only) needs none of this: it connects to the first
# host's PostgreSQL and RabbitMQ (see deploy/README.md, "Several hosts").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pg_db=${PG_DB:-nebula}
pg_user=${PG_USER:-nebula}
rmq_vhost=${RMQ_VHOST:-nebula}
rmq_user=${RMQ_USER:-nebula}

say() { printf '\n== %s\n' "$*"; }
secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
urlquote() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

start_service() {
  if [ -d /run/systemd/system ]; then
    systemctl enable --now "$1"
  else
    service "$1" start  # containers without systemd
  fi
}

wait_for() {  # seconds command...
  local seconds=$1
  shift
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "gave up waiting for: $*" >&2
  return 1
}

if [ "$(id -u)" != 0 ]; then
  echo "run me as root (sudo $0)" >&2
  exit 1
fi

if [ "${SKIP_APT:-0}" != 1 ]; then
  say "installing PostgreSQL and RabbitMQ"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql rabbitmq-server python3
fi

say "starting PostgreSQL"
runuser -u postgres -- pg_isready -q || start_service postgresql
wait_for 60 runuser -u postgres -- pg_isready -q

psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
# psql interpolates :'name' (a quoted literal) and :"name" (an identifier) in its input only
role_exists() { [ -n "$(psql_admin -v name="$1" <<<"SELECT 1 FROM pg_roles WHERE rolname = :'name'")" ]; }
database_exists() { [ -n "$(psql_admin -v name="$1" <<<"SELECT 1 FROM pg_database WHERE datname = :'name'")" ]; }
set_role() {  # CREATE or ALTER, name, password
  psql_admin -v name="$2" -v password="$3" <<<"$1 ROLE :\"name\" LOGIN PASSWORD :'password';"
}

if ! role_exists "$pg_user"; then
  pg_password=${PG_PASSWORD:-$(secret)}
  set_role CREATE "$pg_user" "$pg_password"
  echo "created role $pg_user"
elif [ -n "${PG_PASSWORD:-}" ]; then
  pg_password=$PG_PASSWORD
  set_role ALTER "$pg_user" "$pg_password"
  echo "role $pg_user exists; password set again"
else
  pg_password=""
  echo "role $pg_user exists; its password is unchanged (give PG_PASSWORD to set it)"
fi
if ! database_exists "$pg_db"; then
  runuser -u postgres -- createdb --owner="$pg_user" --encoding=UTF8 "$pg_db"
  echo "created database $pg_db"
else
  echo "database $pg_db exists"
fi

say "starting RabbitMQ"
timeout 20 rabbitmqctl -q await_startup >/dev/null 2>&1 || start_service rabbitmq-server
wait_for 120 rabbitmqctl -q await_startup

if ! rabbitmqctl -q list_vhosts | grep -qx "$rmq_vhost"; then
  rabbitmqctl -q add_vhost "$rmq_vhost"
  echo "created vhost $rmq_vhost"
fi
if ! rabbitmqctl -q list_users | cut -f1 | grep -qx "$rmq_user"; then
  rmq_password=${RMQ_PASSWORD:-$(secret)}
  rabbitmqctl -q add_user "$rmq_user" "$rmq_password"
  echo "created user $rmq_user"
elif [ -n "${RMQ_PASSWORD:-}" ]; then
  rmq_password=$RMQ_PASSWORD
  rabbitmqctl -q change_password "$rmq_user" "$rmq_password"
else
  rmq_password=""
  echo "user $rmq_user exists; its password is unchanged (give RMQ_PASSWORD to set it)"
fi
rabbitmqctl -q set_permissions -p "$rmq_vhost" "$rmq_user" ".*" ".*" ".*"

say "queues and policies of vhost $rmq_vhost"
# through stdin: the node, running as the rabbitmq user, would read a file argument itself
sed "s/\"vhost\": \"nebula\"/\"vhost\": \"$rmq_vhost\"/; s/\"name\": \"nebula\"/\"name\": \"$rmq_vhost\"/" \
  "$here/rabbitmq/definitions.json" | rabbitmqctl -q import_definitions --format json
set +e
"$here/rabbitmq/consumer-timeout.sh" "$rmq_vhost"
timeout_status=$?
set -e
if [ "$timeout_status" = 3 ] && [ "${RMQ_GLOBAL_TIMEOUT:-}" != skip ]; then
  line=$(grep '^consumer_timeout' "$here/rabbitmq/rabbitmq.conf")
  conf=/etc/rabbitmq/rabbitmq.conf
  touch "$conf"
  if ! grep -qx "$line" "$conf"; then
    sed -i '/^consumer_timeout[[:space:]]*=/d' "$conf"
    echo "$line" >>"$conf"
    echo "set '$line' in $conf; restarting RabbitMQ"
    if [ -d /run/systemd/system ]; then systemctl restart rabbitmq-server; else service rabbitmq-server restart; fi
    wait_for 120 rabbitmqctl -q await_startup
  fi
elif [ "$timeout_status" != 0 ] && [ "$timeout_status" != 3 ]; then
  exit "$timeout_status"
fi

say "put these in the nebula: section of your settings file (or NEBULA_DATABASE_URL / NEBULA_BROKER_URL)"
pg_secret=${pg_password:+:$(urlquote "$pg_password")}
rmq_secret=${rmq_password:+:$(urlquote "$rmq_password")}
echo "nebula:"
echo "  database_url: postgresql+psycopg://$(urlquote "$pg_user")${pg_secret:-:PASSWORD}@127.0.0.1:5432/$pg_db"
echo "  broker_url: amqp://$(urlquote "$rmq_user")${rmq_secret:-:PASSWORD}@127.0.0.1:5672/$(urlquote "$rmq_vhost")"
echo
echo "then: manage -c nebula.yml db upgrade && manage -c nebula.yml start"
