#!/bin/sh
# Starts Patroni with the PostgreSQL passwords read from the secret files, so that neither the compose file nor
# the node configs hold one. Patroni reads PATRONI_*_PASSWORD and keeps PATRONI_* variables out of postgres' env.
set -eu
secret() {
  if [ ! -r "/run/secrets/$1" ]; then
    echo "patroni-entrypoint: missing secret file /run/secrets/$1" >&2
    exit 1
  fi
  cat "/run/secrets/$1"
}
PATRONI_SUPERUSER_PASSWORD=$(secret postgres_password)
PATRONI_REPLICATION_PASSWORD=$(secret replication_password)
PATRONI_REWIND_PASSWORD=$(secret rewind_password)
export PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_PASSWORD PATRONI_REWIND_PASSWORD
exec patroni "$@"
