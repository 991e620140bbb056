#!/usr/bin/env bash
# Creates the secret files of docker/compose.yaml with random values, leaving existing ones alone:
#   bash docker/make-secrets.sh [directory]        (default: docker/secrets, which git ignores)
# The directory is 0700 (only you can open it); the files are 0644 because compose bind-mounts them unchanged and
# the services read them as their own non-root users. Values are hex: safe in pgpass, psql and RabbitMQ's config.
set -euo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/secrets}
names=(db_password db_migration_password amqp_password api_tokens postgres_password replication_password rewind_password)

random_hex() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

install -d -m 0700 "$dir"
for name in "${names[@]}"; do
  file=$dir/$name
  if [[ -e $file ]]; then
    echo "kept    $file"
    continue
  fi
  # api_tokens holds one bearer token per line; one to start with.
  (umask 022 && printf '%s\n' "$(random_hex)" >"$file")
  echo "created $file"
done
