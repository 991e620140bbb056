#!/usr/bin/env bash
# Physical backup of the orchestrator's PostgreSQL cluster with pgBackRest (TR-DB-2). Together with the WAL archive
# (archive_command, see postgresql-archiving.conf) it allows a restore to any point in time since the oldest
# retained full backup: see restore.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--init] [--type full|diff|incr] [--pg-data DIR] [pgBackRest options]

Takes a backup of the cluster named by the stanza, then lists the repository's backups. Run it as the OS user
that runs PostgreSQL (the same one whose archive_command writes to the repository).

  --init            first create the stanza (idempotent) and check that WAL archiving works
  --type TYPE       full, diff or incr [default incr; pgBackRest takes a full one when there is none yet]
  --pg-data DIR     the cluster's data directory    [PGDATA, default: the config's pg1-path]
  --no-check        do not run \`pgbackrest check\` before the backup
$COMMON_USAGE

Exit codes: 0 backed up, 1 pgBackRest failed, 2 usage error, 3 precondition (tool, config, user) not met.
USAGE
}

init=false
check=true
type=incr
pg_data=${PGDATA:-}
while [[ $# -gt 0 ]]; do
  if common_option "$@"; then
    shift "$SHIFT"
    continue
  fi
  case $1 in
    --init) init=true && shift ;;
    --no-check) check=false && shift ;;
    --type) need_value "$@" && type=$2 && shift 2 ;;
    --pg-data) need_value "$@" && pg_data=$2 && shift 2 ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done
[[ $type == full || $type == diff || $type == incr ]] || usage_error "--type must be full, diff or incr, not $type"

prepare_pgbackrest
[[ -n $pg_data ]] && pg_options+=("--pg1-path=$pg_data")

if $init; then
  log "creating stanza $STANZA (does nothing when it exists and matches the cluster)"
  run_pgbackrest stanza-create || die "$EXIT_FAILED" "stanza-create failed"
fi
if $check; then
  # Switches WAL and waits until the segment is in the repository: fails fast when archiving is broken, which a
  # backup would otherwise only notice at its end.
  log "checking the configuration and WAL archiving"
  run_pgbackrest check || die "$EXIT_FAILED" "pgbackrest check failed: see $(conf_value log-path)"
fi
log "taking a $type backup of stanza $STANZA"
run_pgbackrest backup "--type=$type" || die "$EXIT_FAILED" "the $type backup failed: see $(conf_value log-path)"
run_pgbackrest info
