#!/usr/bin/env bash
# A throwaway PostgreSQL for the MLflow backend store, from Debian's `postgresql` package.
#
#   scripts/start_postgres.sh start DATADIR [PORT]   # initdb if needed, start, create db `mlflow`
#   scripts/start_postgres.sh stop  DATADIR
#
# Listens on 127.0.0.1 only (and a Unix socket inside DATADIR), with `trust` auth for
# local connections: a test and demo setup with no secret to leak. A shared server should
# use scram-sha-256 and pass the password via MLFLOW_BACKEND_STORE_URI / PGPASSWORD.
# Prints the SQLAlchemy URI for `mlflow server --backend-store-uri` on success.
set -euo pipefail
cmd=${1:?start|stop}; data=${2:?DATADIR}; port=${3:-5432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL not installed: apt-get install -y postgresql" >&2; exit 3; }
mkdir -p "$data"
data=$(cd "$data" && pwd)
# initdb and postgres refuse to run as root: run them as the package's `postgres` user.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$data"

# Tests set PG_FSYNC_OFF=1: faster, and a crash may lose data (fine for a throwaway store).
extra=""; [ "${PG_FSYNC_OFF:-0}" = 1 ] && extra="-c fsync=off -c synchronous_commit=off"

case "$cmd" in
start)
  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$data" -U greenloop -A trust -E UTF8 --no-locale >"$data/../initdb.log" 2>&1 \
      || { cat "$data/../initdb.log" >&2; exit 1; }
  fi
  as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data $extra" start >/dev/null
  as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U greenloop -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 \
    || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U greenloop mlflow
  # +psycopg2: SQLAlchemy 2.1 otherwise looks for psycopg 3 (the `scale` extra has psycopg2).
  echo "postgresql+psycopg2://greenloop@127.0.0.1:$port/mlflow"
  ;;
stop)
  [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  ;;
*) echo "usage: $0 start|stop DATADIR [PORT]" >&2; exit 2 ;;
esac
