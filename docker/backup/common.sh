# shellcheck shell=bash disable=SC2034  # its variables are for the scripts that source it
# Shared by the backup scripts in this directory; sourced, never run. Exit codes, for every script:
#   0 done   1 the operation failed   2 usage error   3 a precondition does not hold (nothing was changed)
#   4 verification found a problem (the data or privileges are not what they must be)

readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_PRECONDITION=3 EXIT_VERIFY=4

CONFIG=${PGBACKREST_CONFIG:-/etc/pgbackrest/pgbackrest.conf}
STANZA=${PGBACKREST_STANZA:-orchestrator}
REPO_PATH=${PGBACKREST_REPO1_PATH:-}

# The options of every pgBackRest script, as a usage text fragment and as a parser: handles "$1" (and its value),
# setting SHIFT; returns 1 when "$1" is not one of them.
readonly COMMON_USAGE="pgBackRest options (flags win over the environment, which wins over the config file):
  --config FILE     pgBackRest config               [PGBACKREST_CONFIG, default /etc/pgbackrest/pgbackrest.conf]
  --stanza NAME     stanza (the config's section)   [PGBACKREST_STANZA, default orchestrator]
  --repo-path DIR   repository path (repo1-path)    [PGBACKREST_REPO1_PATH, default: the config's]
  --pg-socket DIR   the server's Unix socket dir    [PGHOST when it is a directory, default: the config's]
  --pg-port PORT    the server's port               [PGPORT, default: the config's]"
common_option() {
  case $1 in
    --config) need_value "$@" && CONFIG=$2 ;;
    --stanza) need_value "$@" && STANZA=$2 ;;
    --repo-path) need_value "$@" && REPO_PATH=$2 ;;
    --pg-socket) need_value "$@" && export PGHOST=$2 ;;
    --pg-port) need_value "$@" && export PGPORT=$2 ;;
    *) return 1 ;;
  esac
  SHIFT=2
}

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { # die <exit code> <message…>
  local code=$1
  shift
  printf '%s: %s\n' "$(basename "$0")" "$*" >&2
  exit "$code"
}
usage_error() { die "$EXIT_USAGE" "$* (see --help)"; }
need_value() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }
require_commands() {
  local command
  for command in "$@"; do
    command -v "$command" >/dev/null 2>&1 || die "$EXIT_PRECONDITION" "$command is not installed"
  done
}

# A value from the pgBackRest config file: the stanza's section wins over [global], like pgBackRest reads it.
conf_value() {
  awk -F= -v key="$1" -v stanza="$STANZA" '
    /^[[:space:]]*\[/ { section = $0; gsub(/[][[:space:]]/, "", section); next }
    /^[[:space:]]*#/ { next }
    {
      name = $1; gsub(/[[:space:]]/, "", name)
      if (name != key) next
      value = substr($0, index($0, "=") + 1); gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
      if (section == stanza) stanzaValue = value; else if (section == "global") globalValue = value
    }
    END { print (stanzaValue != "" ? stanzaValue : globalValue) }
  ' "$CONFIG"
}

# pgBackRest as every script calls it: always with --config (archive_command does the same) and the stanza.
# PGHOST (when it is a socket directory), PGPORT and --repo-path override the config file.
repo_options=()
pg_options=()
prepare_pgbackrest() {
  require_commands pgbackrest
  [[ -r $CONFIG ]] || die "$EXIT_PRECONDITION" "cannot read the pgBackRest config $CONFIG (set --config or PGBACKREST_CONFIG)"
  # Files the repository gets from a root-run command are not writable by archive_command (the postgres user):
  # archiving would stop at the next WAL segment.
  if [[ $(id -u) -eq 0 ]]; then
    die "$EXIT_PRECONDITION" "run as the OS user that runs PostgreSQL (e.g. sudo -u postgres $0 …), not as root"
  fi
  repo_options=("--config=$CONFIG" "--stanza=$STANZA")
  [[ -n $REPO_PATH ]] && repo_options+=("--repo1-path=$REPO_PATH")
  [[ ${PGHOST:-} == /* ]] && pg_options+=("--pg1-socket-path=$PGHOST")
  [[ -n ${PGPORT:-} ]] && pg_options+=("--pg1-port=$PGPORT")
  # pgBackRest does not create its log directory.
  local log_path
  log_path=$(conf_value log-path)
  mkdir -p "${log_path:-/var/log/pgbackrest}" ||
    die "$EXIT_PRECONDITION" "cannot create the log directory ${log_path:-/var/log/pgbackrest}"
}
run_pgbackrest() { # run_pgbackrest <command> [options…]; the server's options only for commands that connect to it
  local command=$1
  shift
  case $command in
    stanza-create | check | backup) pgbackrest "${repo_options[@]}" "${pg_options[@]}" "$@" "$command" ;;
    *) pgbackrest "${repo_options[@]}" "$@" "$command" ;;
  esac
}

# psql that stops at the first error and prints bare values.
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
