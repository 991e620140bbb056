#!/usr/bin/env bash
# Checks around the pgBackRest backups of the orchestrator's cluster (TR-DB-2):
#   live      the running cluster archives its WAL: switches the segment, waits until it is archived, runs
#             `pgbackrest check` (do this before a point-in-time restore to a recent time, too)
#   repo      the repository is sound: `pgbackrest verify` (checksums of backups and WAL) and `pgbackrest info`
#   restored  a restored copy answers: recovery finished, the orchestrator schema is there and readable, and with
#             --target-time, no saga transition in it is younger than the target
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") live|repo|restored [options]

  live       [pgBackRest options] [--timeout SECONDS]
             connects with psql as a superuser (PGUSER, default postgres) to the stanza's cluster: PGHOST and PGPORT,
             default the config's pg1-socket-path and pg1-port
  repo       [pgBackRest options]
  restored   [--target-time TIME] [--timeout SECONDS]
             connects with psql to the copy (PGHOST, PGPORT, PGDATABASE [default orchestrator], PGUSER [postgres])

  --timeout SECONDS   how long to wait for the archiver, or for the copy to finish recovery [default 60]
  --target-time TIME  the time restore.sh recovered to: transitions after it must be absent
$COMMON_USAGE

Run live and repo as the OS user that runs PostgreSQL. Exit codes: 0 all checks passed, 1 a check could not run or
failed (pgBackRest, the archiver, the connection), 2 usage error, 3 precondition not met, 4 the restored copy holds
what it must not.
USAGE
}

[[ $# -gt 0 ]] || usage_error "say what to verify: live, repo or restored"
mode=$1
shift
[[ $mode == -h || $mode == --help ]] && usage && exit 0
[[ $mode == live || $mode == repo || $mode == restored ]] || usage_error "unknown check $mode"

timeout=60
target_time=
while [[ $# -gt 0 ]]; do
  if common_option "$@"; then
    shift "$SHIFT"
    continue
  fi
  case $1 in
    --timeout) need_value "$@" && timeout=$2 && shift 2 ;;
    --target-time) need_value "$@" && target_time=$2 && shift 2 ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done
[[ $timeout =~ ^[0-9]+$ ]] || usage_error "--timeout must be a number of seconds"
export PGUSER=${PGUSER:-postgres}

verify_live() {
  require_commands psql
  prepare_pgbackrest
  # The cluster pgBackRest backs up, unless PGHOST / PGPORT (or the flags) say otherwise.
  local socket port
  socket=$(conf_value pg1-socket-path)
  port=$(conf_value pg1-port)
  export PGHOST=${PGHOST:-${socket:-/var/run/postgresql}} PGPORT=${PGPORT:-${port:-5432}}
  # pg_walfile_name() of the switch position names the segment just closed (or, when nothing was written since
  # the last switch, the one closed then): once the archiver reports it, everything committed so far is archived.
  local segment archived failed deadline=$((SECONDS + timeout))
  segment=$(sql -d postgres -c "SELECT pg_walfile_name(pg_switch_wal())") || die "$EXIT_FAILED" "cannot switch WAL"
  log "waiting until WAL segment $segment is archived"
  while :; do
    IFS='|' read -r archived failed < <(sql -d postgres -c \
      "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver")
    # Same timeline: segment names order like the WAL positions they stand for.
    [[ -n $archived && ! $archived < $segment ]] && break
    if ((SECONDS > deadline)); then
      die "$EXIT_FAILED" "WAL segment $segment was not archived within ${timeout}s (last archived: ${archived:-none}, last failed: ${failed:-none}): check archive_command and $(conf_value log-path)"
    fi
    sleep 0.2
  done
  log "WAL archived up to $archived; running pgbackrest check"
  run_pgbackrest check || die "$EXIT_FAILED" "pgbackrest check failed: see $(conf_value log-path)"
}

verify_repo() {
  prepare_pgbackrest
  log "verifying backups and WAL in the repository of stanza $STANZA"
  run_pgbackrest verify --output=text || die "$EXIT_FAILED" "pgbackrest verify found a problem"
  run_pgbackrest info || die "$EXIT_FAILED" "pgbackrest info failed"
}

verify_restored() {
  require_commands psql pg_isready
  export PGDATABASE=${PGDATABASE:-orchestrator}
  local deadline=$((SECONDS + timeout))
  log "waiting until the copy accepts connections and has finished recovery"
  until pg_isready -q && [[ $(sql -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]]; do
    if ((SECONDS > deadline)); then
      local state
      state=$(sql -c "SELECT CASE WHEN pg_is_in_recovery() THEN 'in recovery, replay ' || pg_get_wal_replay_pause_state() END" 2>&1 || true)
      die "$EXIT_FAILED" "the copy did not finish recovery within ${timeout}s (${state:-not accepting connections}); with --target-action pause, it waits for pg_wal_replay_resume()"
    fi
    sleep 0.2
  done
  local summary
  summary=$(sql -F ' ' -c "
    SELECT (SELECT count(*) FROM orchestrator.saga_instances),
           (SELECT count(*) FROM orchestrator.saga_transitions),
           (SELECT coalesce(max(migration_id), 0) FROM orchestrator.effect_sql_migrations),
           (SELECT coalesce(max(at)::text, 'never') FROM orchestrator.saga_transitions)") ||
    die "$EXIT_FAILED" "the copy does not answer queries on the orchestrator schema"
  local sagas transitions migration latest
  read -r sagas transitions migration latest <<<"$summary"
  printf 'restored copy: %s sagas, %s transitions, schema at migration %s, latest transition at %s\n' \
    "$sagas" "$transitions" "$migration" "$latest"
  # Every saga's current version has its history row: a torn copy would show otherwise.
  local torn
  torn=$(sql -c "
    SELECT count(*) FROM orchestrator.saga_instances s
    WHERE NOT EXISTS (SELECT 1 FROM orchestrator.saga_transitions t
                      WHERE t.saga_id = s.id AND t.lock_version = s.lock_version)")
  [[ $torn == 0 ]] || die "$EXIT_VERIFY" "$torn sagas lack the history row of their current version"
  if [[ -n $target_time ]]; then
    # at is the writing transaction's start time: one that started after the target committed after it.
    local later
    later=$(sql -v target="$target_time" <<<"SELECT count(*) FROM orchestrator.saga_transitions WHERE at > :'target'::timestamptz")
    [[ $later == 0 ]] || die "$EXIT_VERIFY" "$later transitions are younger than the target $target_time"
    printf 'no transition after %s\n' "$target_time"
  fi
}

"verify_$mode"
