#!/usr/bin/env bash
# Checks the deployment files with the tools that will read them, where Debian has those tools; `npm test`
# (test/packaging) checks everything else. Run by .ci/run before `npm test`.
#
#   haproxy -c                     docker/haproxy/haproxy.cfg (HAProxy 2.6, as on these machines)
#   docker-compose config          docker/compose.yaml against Compose's schema (docker-compose 1.29 from Debian)
#   patroni --validate-config      docker/patroni/patroni{1,2}.yml (Patroni 3.0)
#   sh -n / bash -n                the shell scripts under docker/
#
# Missing tools are installed from Debian when running as root (CI; ~30 s), otherwise the script stops and says
# what to install. Nothing here needs Docker: docker-compose only reads the file (`config`), it starts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

failures=0
ok() { printf 'ok      %s\n' "$*"; }
failed() { printf 'FAILED  %s\n' "$*" >&2; failures=$((failures + 1)); }

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v patroni >/dev/null || need+=(patroni)
if ((${#need[@]} > 0)); then
  if [[ $(id -u) != 0 ]]; then
    echo "validate.sh needs: ${need[*]} (apt-get install --no-install-recommends ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]} from Debian"
  # --no-install-recommends: docker-compose would otherwise bring the Docker daemon along.
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >/tmp/validate-apt.log 2>&1 || { cat /tmp/validate-apt.log >&2; exit 1; }
fi

# HAProxy: valid, and no warning except the one this machine causes: the compose service names (patroni1,
# patroni2) resolve only inside the compose network.
if out=$(haproxy -c -f docker/haproxy/haproxy.cfg 2>&1); then
  unexpected=$(grep -E '\[(WARNING|ALERT)\]' <<<"$out" | grep -v "could not resolve address 'patroni[12]'" || true)
  if [[ -z $unexpected ]]; then ok "haproxy -c -f docker/haproxy/haproxy.cfg"; else failed "haproxy warnings:"$'\n'"$unexpected"; fi
else
  failed "haproxy -c -f docker/haproxy/haproxy.cfg"$'\n'"$out"
fi

# Compose: docker-compose 1.29 predates the top-level `name:` key (Compose v2 reads it), so it checks a copy
# without it, next to the original so that relative paths (build contexts, mounts, secrets) resolve the same.
copy=$(mktemp docker/.compose-validate.XXXXXX.yaml)
trap 'rm -f "$copy"' EXIT
grep -v '^name:' docker/compose.yaml >"$copy"
if out=$(docker-compose -f "$copy" config -q 2>&1); then
  ok "docker-compose config docker/compose.yaml"
else
  failed "docker-compose config docker/compose.yaml"$'\n'"$out"
fi

# Patroni: its validator also probes the network, which says nothing about the file on this machine: compose
# hostnames (etcd) do not resolve here and port 5432 is the machine's own PostgreSQL. And Patroni 3.0.2's
# validator wants the deprecated bootstrap.pg_hba, which the daemon does not need (postgresql.pg_hba is used).
for node in patroni1 patroni2; do
  out=$(patroni --validate-config "docker/patroni/$node.yml" 2>&1 || true)
  unexpected=$(grep -v -e "^etcd3.hosts etcd:2379 didn't pass validation: \[Errno -[0-9]*\] .*\(not known\|resolution\)" \
    -e "^postgresql.listen 0.0.0.0:5432 didn't pass validation: 'Port 5432 is already in use.'$" \
    -e '^bootstrap.pg_hba  is not defined.$' <<<"$out" | grep -v '^$' || true)
  if [[ -z $unexpected ]]; then ok "patroni --validate-config docker/patroni/$node.yml"; else failed "patroni $node:"$'\n'"$unexpected"; fi
done

# Each script with the shell of its #! line; sourced libraries (no #! line) are bash here.
for script in docker/*.sh docker/*/*.sh; do
  shebang=$(head -n 1 "$script")
  if [[ $shebang == '#!'* && $shebang != *bash* ]]; then shell=sh; else shell=bash; fi
  if out=$("$shell" -n "$script" 2>&1); then ok "$shell -n $script"; else failed "$shell -n $script"$'\n'"$out"; fi
done

if ((failures > 0)); then
  echo "validate.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "validate.sh: all deployment files pass"
