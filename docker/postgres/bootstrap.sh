#!/bin/sh
# The compose stack's one-shot bootstrap job (docker/compose.yaml, service postgres-bootstrap): waits until the
# primary behind HAProxy takes writes, creates the database when it is missing, and runs bootstrap.sql (roles,
# schema, grants; idempotent) with the two role passwords read from the secret files. The passwords travel through
# a temporary pgpass file and psql's backtick substitution: never on a command line, never in the environment.
#
#   PGHOST, PGPORT   where the primary is (libpq variables)          SECRETS_DIR  default /run/secrets
#   PGUSER           the superuser, default postgres                 ORCH_DB_NAME default orchestrator
#   BOOTSTRAP_WAIT   seconds to wait for the primary, default 120
#
# Secret files: postgres_password (the superuser's), db_migration_password (orchestrator_owner), db_password
# (orchestrator_app). Passwords must not contain a backtick or a newline.
set -eu
secrets=${SECRETS_DIR:-/run/secrets}
database=${ORCH_DB_NAME:-orchestrator}
sql=$(cd "$(dirname "$0")" && pwd)/bootstrap.sql
export PGUSER="${PGUSER:-postgres}" PGCONNECT_TIMEOUT=3

for file in postgres_password db_migration_password db_password; do
  if [ ! -r "$secrets/$file" ]; then
    echo "bootstrap: missing secret file $secrets/$file" >&2
    exit 1
  fi
done

PGPASSFILE=$(mktemp)
export PGPASSFILE
trap 'rm -f "$PGPASSFILE"' EXIT
# pgpass escapes ':' and '\' with a backslash.
printf '*:*:*:%s:%s\n' "$PGUSER" "$(sed 's/[\\:]/\\&/g' "$secrets/postgres_password")" >"$PGPASSFILE"
chmod 600 "$PGPASSFILE"

deadline=$(($(date +%s) + ${BOOTSTRAP_WAIT:-120}))
until [ "$(psql -X -At -d postgres -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = t ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "bootstrap: no writable PostgreSQL at ${PGHOST:-local socket}:${PGPORT:-5432} after ${BOOTSTRAP_WAIT:-120} s" >&2
    exit 1
  fi
  sleep 1
done

psql -X -q -v ON_ERROR_STOP=1 -d postgres -v db="$database" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL

{
  printf '\\set owner_password `cat %s/db_migration_password`\n' "$secrets"
  printf '\\set app_password `cat %s/db_password`\n' "$secrets"
  printf '\\i %s\n' "$sql"
} | psql -X -q -v ON_ERROR_STOP=1 -d "$database"
echo "bootstrap: database $database is ready (roles orchestrator_owner and orchestrator_app, schema orchestrator)"
