#!/usr/bin/env bash
# Restores a dump.sh dump of the orchestrator schema into a fresh database, on this cluster or another (TR-DB-2):
#   1. docker/postgres/bootstrap.sql: the roles (cluster-wide, created when missing), the empty schema owned by
#      orchestrator_owner, database grants and default privileges;
#   2. pg_restore -O -x as orchestrator_owner (SET ROLE), so every table, sequence, function and trigger belongs to
#      the schema owner exactly as migrations create them, whoever owned them where the dump came from;
#   3. bootstrap.sql again, for the grants the dump leaves out (-x), then a check of the runtime role's privileges.
# The service then starts on the database as it is: the migrations table came with the dump.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") -f FILE [-d DATABASE] [--create] (--secrets-dir DIR | --owner-password-file F --app-password-file F)

  -f, --file FILE            a dump made by dump.sh (pg_dump -Fc -n orchestrator)
  -d, --dbname NAME          the target database [PGDATABASE, default orchestrator]; must be fresh: no orchestrator
                             tables in it
  --create                   create the database first (it must not exist)
  --secrets-dir DIR          the service's secrets directory: db_migration_password (orchestrator_owner) and
                             db_password (orchestrator_app) [ORCH_SECRETS_DIR]
  --owner-password-file F    the password of orchestrator_owner, instead of DIR/db_migration_password
  --app-password-file F      the password of orchestrator_app, instead of DIR/db_password
  --bootstrap FILE           bootstrap.sql [default: docker/postgres/bootstrap.sql of this checkout]
Connection: PGHOST, PGPORT and PGUSER [default postgres], a superuser (it creates roles and grants).

bootstrap.sql sets both roles' passwords: give the ones the service uses. Exit codes: 0 restored and checked,
1 a step failed (the restore is one transaction: nothing of it stays), 2 usage error, 3 precondition not met (tool,
file, database not fresh or already existing with --create), 4 the runtime role's privileges are wrong afterwards.
USAGE
}

file=
database=${PGDATABASE:-orchestrator}
create=false
secrets_dir=${ORCH_SECRETS_DIR:-}
owner_password_file=
app_password_file=
bootstrap="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/postgres/bootstrap.sql"
while [[ $# -gt 0 ]]; do
  case $1 in
    -f | --file) need_value "$@" && file=$2 && shift 2 ;;
    -d | --dbname) need_value "$@" && database=$2 && shift 2 ;;
    --create) create=true && shift ;;
    --secrets-dir) need_value "$@" && secrets_dir=$2 && shift 2 ;;
    --owner-password-file) need_value "$@" && owner_password_file=$2 && shift 2 ;;
    --app-password-file) need_value "$@" && app_password_file=$2 && shift 2 ;;
    --bootstrap) need_value "$@" && bootstrap=$2 && shift 2 ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done
[[ -n $file ]] || usage_error "-f FILE is required"
[[ $database =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || usage_error "database name $database: letters, digits and _ only"
owner_password_file=${owner_password_file:-${secrets_dir:+$secrets_dir/db_migration_password}}
app_password_file=${app_password_file:-${secrets_dir:+$secrets_dir/db_password}}
[[ -n $owner_password_file && -n $app_password_file ]] ||
  usage_error "the roles' passwords: give --secrets-dir or both --owner-password-file and --app-password-file"

export PGUSER=${PGUSER:-postgres}
require_commands psql pg_restore
for readable in "$file" "$bootstrap" "$owner_password_file" "$app_password_file"; do
  [[ -r $readable ]] || die "$EXIT_PRECONDITION" "cannot read $readable"
done
for secret in "$owner_password_file" "$app_password_file"; do
  # psql reads it through a shell command (below), so that the password never appears in a process's arguments.
  [[ $secret != *\'* ]] || die "$EXIT_PRECONDITION" "a password file path must not contain a single quote: $secret"
done
pg_restore --list "$file" >/dev/null || die "$EXIT_PRECONDITION" "$file is not a pg_dump custom-format archive"

if $create; then
  exists=$(sql -d postgres -v name="$database" <<<"SELECT count(*) FROM pg_database WHERE datname = :'name'") ||
    die "$EXIT_FAILED" "cannot connect to the server"
  [[ $exists == 0 ]] || die "$EXIT_PRECONDITION" "database $database exists; drop it or leave out --create"
  log "creating database $database"
  sql -d postgres -c "CREATE DATABASE \"$database\"" || die "$EXIT_FAILED" "cannot create database $database"
fi
tables=$(sql -d "$database" -c "
  SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace('orchestrator')") ||
  die "$EXIT_FAILED" "cannot connect to database $database"
[[ $tables == 0 ]] || die "$EXIT_PRECONDITION" "database $database already holds $tables orchestrator objects: restore into a fresh database"

run_bootstrap() {
  {
    printf "\\\\set owner_password \`cat '%s'\`\n" "$owner_password_file"
    printf "\\\\set app_password \`cat '%s'\`\n" "$app_password_file"
    cat -- "$bootstrap"
  } | PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$database" -f - >/dev/null || die "$EXIT_FAILED" "bootstrap.sql failed"
}

log "bootstrapping roles, schema and grants in $database"
run_bootstrap

# Everything but the schema itself, which bootstrap.sql made with its owner and grants.
list=$(mktemp)
trap 'rm -f -- "$list"' EXIT
pg_restore --list "$file" | awk '!($4 == "SCHEMA" && $5 == "-" && $6 == "orchestrator")' >"$list"
log "restoring $file into $database as orchestrator_owner"
pg_restore -O -x --role=orchestrator_owner --single-transaction --exit-on-error -L "$list" -d "$database" "$file" ||
  die "$EXIT_FAILED" "pg_restore failed: nothing was restored"

log "granting the runtime role its privileges again"
run_bootstrap

problems=$(sql -d "$database" <<'SQL'
WITH rels AS (
  SELECT c.oid, c.relname, c.relkind, pg_get_userbyid(c.relowner) AS owner
  FROM pg_class c WHERE c.relnamespace = 'orchestrator'::regnamespace
)
SELECT problem FROM (
  SELECT 'orchestrator_app is a superuser' AS problem
  FROM pg_roles WHERE rolname = 'orchestrator_app' AND rolsuper
  UNION ALL SELECT 'the schema is owned by ' || pg_get_userbyid(nspowner)
  FROM pg_namespace WHERE nspname = 'orchestrator' AND pg_get_userbyid(nspowner) <> 'orchestrator_owner'
  UNION ALL SELECT 'orchestrator_app lacks USAGE on the schema'
  WHERE NOT has_schema_privilege('orchestrator_app', 'orchestrator', 'USAGE')
  UNION ALL SELECT 'orchestrator_app can CREATE in the schema'
  WHERE has_schema_privilege('orchestrator_app', 'orchestrator', 'CREATE')
  UNION ALL SELECT 'orchestrator_app can ' || p || ' in the database'
  FROM unnest(ARRAY['CREATE', 'TEMPORARY']) p WHERE has_database_privilege('orchestrator_app', current_database(), p)
  UNION ALL SELECT format('%s is owned by %s', relname, owner) FROM rels WHERE owner <> 'orchestrator_owner'
  UNION ALL SELECT format('orchestrator_app lacks %s on %s', p, relname)
  FROM rels CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p
  WHERE relkind IN ('r', 'p') AND relname <> 'effect_sql_migrations' AND NOT has_table_privilege('orchestrator_app', oid, p)
  UNION ALL SELECT format('orchestrator_app may %s on %s', p, relname)
  FROM rels CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
  WHERE relkind IN ('r', 'p') AND (relname = 'effect_sql_migrations' OR p IN ('TRUNCATE', 'REFERENCES', 'TRIGGER'))
    AND has_table_privilege('orchestrator_app', oid, p)
  UNION ALL SELECT 'orchestrator_app cannot read effect_sql_migrations'
  WHERE NOT has_table_privilege('orchestrator_app', 'orchestrator.effect_sql_migrations', 'SELECT')
  UNION ALL SELECT format('function %s is owned by %s', proname, pg_get_userbyid(proowner))
  FROM pg_proc WHERE pronamespace = 'orchestrator'::regnamespace AND pg_get_userbyid(proowner) <> 'orchestrator_owner'
  UNION ALL SELECT 'no default privileges for the tables migrations create'
  WHERE NOT EXISTS (SELECT 1 FROM pg_default_acl WHERE defaclrole = 'orchestrator_owner'::regrole
                    AND defaclnamespace = 'orchestrator'::regnamespace AND defaclobjtype = 'r')
) problems
SQL
) || die "$EXIT_FAILED" "cannot check the privileges"
if [[ -n $problems ]]; then
  die "$EXIT_VERIFY" "privileges are wrong after the restore:"$'\n'"$problems"
fi

summary=$(sql -d "$database" -F ' ' -c "
  SELECT (SELECT count(*) FROM orchestrator.saga_instances),
         (SELECT coalesce(max(migration_id), 0) FROM orchestrator.effect_sql_migrations)")
read -r sagas migration <<<"$summary"
printf 'restored %s into %s: %s sagas, schema at migration %s, privileges checked\n' \
  "$file" "$database" "$sagas" "$migration"
