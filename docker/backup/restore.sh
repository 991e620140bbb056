#!/usr/bin/env bash
# Point-in-time restore of the orchestrator's cluster from the pgBackRest repository into a NEW data directory
# (TR-DB-2). It never touches the running cluster: the restored copy is started next to it, on another port and
# with archiving off, checked (verify.sh restored), and only then promoted to serve — by pointing the service (or
# HAProxy / Patroni) at it, or by moving it into place while the old cluster is stopped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --to DIR (--target-time TIME | --latest) [options] [pgBackRest options]

Restores the newest backup taken before the target and writes the recovery settings that replay the archived WAL
up to it. Run it as the OS user that runs PostgreSQL. Before restoring to a recent time, make sure the WAL up to it
is archived: \`verify.sh live\` switches the WAL segment and waits for it.

  --to DIR               the new data directory: must not exist or be empty (created with mode 0700)
  --target-time TIME     recover up to this instant, e.g. '2026-11-26 20:15:00+00' (always give the zone)
  --latest               recover everything the archive holds
  --target-exclusive     stop just before a transaction committed exactly at TIME [default: include it]
  --target-action ACTION promote (a writable copy, new timeline) or pause (read-only, can recover further)
                         [default promote; --latest always promotes]
  --set LABEL            restore this backup set instead of the newest one before the target
  --port PORT            the port to suggest for starting the copy [default 5433]
$COMMON_USAGE

The copy gets archive_mode=off (it must never push WAL into the repository of the cluster it came from) and the
config's port: start it on another one, as printed at the end.

Exit codes: 0 restored, 1 pgBackRest failed, 2 usage error, 3 precondition not met (the directory is not empty,
is the configured cluster's, or a server runs in it).
USAGE
}

to=
target_time=
latest=false
exclusive=false
action=promote
backup_set=
port=5433
while [[ $# -gt 0 ]]; do
  if common_option "$@"; then
    shift "$SHIFT"
    continue
  fi
  case $1 in
    --to) need_value "$@" && to=$2 && shift 2 ;;
    --target-time) need_value "$@" && target_time=$2 && shift 2 ;;
    --latest) latest=true && shift ;;
    --target-exclusive) exclusive=true && shift ;;
    --target-action) need_value "$@" && action=$2 && shift 2 ;;
    --set) need_value "$@" && backup_set=$2 && shift 2 ;;
    --port) need_value "$@" && port=$2 && shift 2 ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done
[[ -n $to ]] || usage_error "--to DIR is required"
if $latest; then
  [[ -z $target_time ]] || usage_error "give --target-time or --latest, not both"
else
  [[ -n $target_time ]] || usage_error "give --target-time TIME (or --latest)"
fi
[[ $action == promote || $action == pause ]] || usage_error "--target-action must be promote or pause"
[[ $port =~ ^[0-9]+$ ]] || usage_error "--port must be a number"

prepare_pgbackrest

# Never over a cluster: not the configured one, not one that runs, not over files of any kind.
to=$(realpath -m -- "$to")
configured=$(conf_value pg1-path)
if [[ -n $configured && $to == $(realpath -m -- "$configured") ]]; then
  die "$EXIT_PRECONDITION" "$to is the data directory of the backed-up cluster ($CONFIG): restore into a new one"
fi
if [[ -n ${PGDATA:-} && $to == $(realpath -m -- "$PGDATA") ]]; then
  die "$EXIT_PRECONDITION" "$to is PGDATA: restore into a new directory"
fi
if [[ -e $to/postmaster.pid ]]; then
  die "$EXIT_PRECONDITION" "a server runs (or crashed) in $to: restore into a new directory"
fi
if [[ -e $to && -n $(ls -A -- "$to") ]]; then
  die "$EXIT_PRECONDITION" "$to is not empty: restore into a new directory"
fi
{ mkdir -p -- "$to" && chmod 0700 -- "$to"; } || die "$EXIT_PRECONDITION" "cannot create $to"

options=("--pg1-path=$to" "--archive-mode=off")
if $latest; then
  # Recovery to the end of the archive always promotes: there is no target to pause at.
  options+=("--type=default")
  what="the end of the archive"
  action=promote
else
  options+=("--type=time" "--target=$target_time" "--target-action=$action")
  $exclusive && options+=("--target-exclusive")
  what=$target_time
fi
[[ -n $backup_set ]] && options+=("--set=$backup_set")

log "restoring stanza $STANZA into $to, recovering up to $what"
run_pgbackrest restore "${options[@]}" ||
  die "$EXIT_FAILED" "the restore failed (see $(conf_value log-path)); remove $to before trying again"

# Debian keeps the server programs off PATH, per major version.
pg_ctl=pg_ctl
version=$(cat "$to/PG_VERSION" 2>/dev/null || true)
if ! command -v pg_ctl >/dev/null 2>&1 && [[ -x /usr/lib/postgresql/$version/bin/pg_ctl ]]; then
  pg_ctl=/usr/lib/postgresql/$version/bin/pg_ctl
fi

# shellcheck disable=SC2016  # the quotes are for the reader's shell
cat <<DONE
Restored into $to (recovery up to $what, then $action). Nothing runs yet. Start the copy on a free port, with
archiving off, as the OS user that runs PostgreSQL:

  $pg_ctl -D $to -l $to/recovery.log -w \\
    -o "-c port=$port -c archive_mode=off -c unix_socket_directories='$to'" start

It replays the archived WAL up to the target, then ${action}s. Check what it holds before using it:

  PGHOST=$to PGPORT=$port $(dirname "$0")/verify.sh restored${target_time:+ --target-time '$target_time'}
DONE
