#!/usr/bin/env bash
# Logical backup of the orchestrator schema (TR-DB-2): `pg_dump -Fc -n orchestrator`, the saga state and the schema
# that holds it, portable to another cluster or major version. Roles, database settings and grants are not what it
# is for: dump-restore.sh recreates them with docker/postgres/bootstrap.sql.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-f FILE] [-d DATABASE] [-n SCHEMA]

  -f, --file FILE       where to write the dump [default ./orchestrator-<UTC time>.dump]
  -d, --dbname NAME     the database            [PGDATABASE, default orchestrator]
  -n, --schema NAME     the schema              [default orchestrator]
Connection: PGHOST, PGPORT, PGUSER [default postgres; the schema owner orchestrator_owner can dump it too],
passwords from ~/.pgpass or PGPASSFILE.

The dump is written next to FILE and renamed once pg_restore can read its table of contents, so FILE is either
complete or absent. Exit codes: 0 dumped, 1 pg_dump failed, 2 usage error, 3 precondition not met (tool missing,
FILE exists, the schema is not in the database).
USAGE
}

file=
database=${PGDATABASE:-orchestrator}
schema=orchestrator
while [[ $# -gt 0 ]]; do
  case $1 in
    -f | --file) need_value "$@" && file=$2 && shift 2 ;;
    -d | --dbname) need_value "$@" && database=$2 && shift 2 ;;
    -n | --schema) need_value "$@" && schema=$2 && shift 2 ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done
file=${file:-orchestrator-$(date -u +%Y%m%dT%H%M%SZ).dump}
export PGUSER=${PGUSER:-postgres}
require_commands pg_dump pg_restore psql
[[ ! -e $file ]] || die "$EXIT_PRECONDITION" "$file exists: choose another name"

present=$(sql -d "$database" -v schema="$schema" <<<"SELECT to_regnamespace(:'schema') IS NOT NULL") ||
  die "$EXIT_FAILED" "cannot connect to database $database"
[[ $present == t ]] || die "$EXIT_PRECONDITION" "database $database has no schema $schema"

partial="$file.partial"
trap 'rm -f -- "$partial"' EXIT
log "dumping schema $schema of database $database to $file"
pg_dump -Fc -n "$schema" -d "$database" -f "$partial" || die "$EXIT_FAILED" "pg_dump failed"
entries=$(pg_restore --list "$partial" | grep -c -v '^;') || die "$EXIT_FAILED" "pg_restore cannot read the dump"
mv -- "$partial" "$file"
trap - EXIT
printf 'dumped %s: %s entries, %s bytes\n' "$file" "$entries" "$(stat -c %s -- "$file")"
