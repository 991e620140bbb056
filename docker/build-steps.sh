#!/usr/bin/env bash
# Runs docker/Dockerfile's build steps without Docker (the machines here have no Docker daemon), in a temp dir:
#   1. deps stage:    package.json + package-lock.json, `npm ci --omit=dev`
#   2. runtime stage: the COPY instructions of the Dockerfile (read from it, so the two cannot drift apart)
#   3. the image's ENTRYPOINT starts: `node src/cli.ts --help` exits 0, run as the image's user (uid 10001) when
#      this script runs as root, and `node src/cli.ts definitions` prints the saga definitions.
# It also checks that nothing only devDependencies need (vitest, typescript, the `node` package …) was installed.
#
# Node: the image runs node:24-bookworm-slim's node. Here the first Node >= 22.19 on PATH is used; when PATH has
# none (these machines ship Node 20), the Node 24 that the repository's dev install put into node_modules/.bin.
# Downloads only from the npm registry (npm's cache makes a repeat run take seconds).
#
# Usage: bash docker/build-steps.sh [--keep]   (--keep leaves the temp dir for inspection)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile=$repo/docker/Dockerfile
keep=${1:-}

log() { printf '== %s\n' "$*"; }
fail() { printf 'build-steps: %s\n' "$*" >&2; exit 1; }

node_ok() { # node_ok <node binary>: Node >= 22.19?
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)' 2>/dev/null
}
node_bin=""
if command -v node >/dev/null && node_ok "$(command -v node)"; then
  node_bin=$(command -v node)
elif [[ -x $repo/node_modules/.bin/node ]] && node_ok "$repo/node_modules/.bin/node"; then
  node_bin=$(readlink -f "$repo/node_modules/.bin/node")
else
  fail "no Node >= 22.19 on PATH and none in node_modules/.bin (run npm ci first)"
fi
log "node $("$node_bin" --version) ($node_bin)"

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-build-steps.XXXXXX")
chmod 755 "$work"
if [[ $keep == --keep ]]; then log "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
deps=$work/deps
app=$work/app
mkdir -p "$deps" "$app"

log "deps stage: npm ci --omit=dev"
grep -Eq '^RUN npm ci --omit=dev( |$)' "$dockerfile" || fail "the Dockerfile's deps stage no longer runs 'npm ci --omit=dev'"
cp "$repo/package.json" "$repo/package-lock.json" "$deps/"
(cd "$deps" && PATH="$(dirname "$node_bin"):$PATH" npm ci --omit=dev --prefer-offline --no-audit --no-fund --loglevel=error)

# package-lock.json marks what only devDependencies need ("dev": true): none of it may be installed.
"$node_bin" -e '
  const fs = require("node:fs"), path = require("node:path")
  const [lockfile, root] = process.argv.slice(1)
  const lock = JSON.parse(fs.readFileSync(lockfile, "utf8"))
  const dev = Object.entries(lock.packages).filter(([p, e]) => p !== "" && e.dev && fs.existsSync(path.join(root, p)))
  if (dev.length > 0) { console.error("dev-only packages installed: " + dev.map(([p]) => p).join(", ")); process.exit(1) }
' "$deps/package-lock.json" "$deps" || fail "npm ci --omit=dev installed dev-only packages"
[[ ! -e $deps/node_modules/.bin/node ]] || fail "node_modules/.bin/node exists: the image must use the base image's node"

log "runtime stage: COPY instructions of docker/Dockerfile"
copies=0
while read -r instruction rest; do
  [[ $instruction == COPY ]] || continue
  read -r -a words <<<"$rest"
  if [[ ${words[0]} == --from=* ]]; then
    # COPY --from=deps /app/node_modules ./node_modules
    [[ ${words[0]} == --from=deps && ${words[1]} == /app/node_modules ]] || fail "unexpected COPY --from: $rest"
    cp -a "$deps/node_modules" "$app/node_modules"
  else
    dest=${words[-1]}
    for source in "${words[@]:0:${#words[@]}-1}"; do
      [[ $source != --* ]] || fail "unsupported COPY flag: $source"
      [[ -e $repo/$source ]] || fail "COPY source $source does not exist"
      if [[ $dest == */ || $dest == ./ ]]; then
        mkdir -p "$app/$dest" && cp -a "$repo/$source" "$app/$dest"
      else
        mkdir -p "$(dirname "$app/$dest")" && cp -a "$repo/$source" "$app/$dest"
      fi
    done
  fi
  copies=$((copies + 1))
done < <(sed -n '/^FROM .* AS runtime$/,$p' "$dockerfile")
((copies >= 4)) || fail "found only $copies COPY instructions in the runtime stage"
for path in node_modules package.json src/cli.ts src/main.ts migrations docker/postgres/bootstrap.sql; do
  [[ -e $app/$path ]] || fail "$path is missing from the image's /app"
done

# As in the image: the files belong to root and are read-only for the service's user.
chmod -R go-w "$app"
run_as=()
if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
  run_as=(setpriv --reuid=10001 --regid=10001 --clear-groups)
  log "running the entrypoint as uid 10001, like the image"
  # The image's node is in /usr/local/bin; this one may sit under a directory uid 10001 cannot enter.
  if ! "${run_as[@]}" "$node_bin" --version >/dev/null 2>&1; then
    install -m 0755 "$node_bin" "$work/node"
    node_bin=$work/node
  fi
fi

log "entrypoint: node src/cli.ts --help"
help=$(cd "$app" && env -i PATH=/usr/bin:/bin HOME=/nonexistent NODE_ENV=production "${run_as[@]}" \
  "$node_bin" src/cli.ts --help 2>&1) || fail "node src/cli.ts --help failed: $help"
grep -q "serve" <<<"$help" || fail "--help does not list the serve command: $help"
grep -q "migrate" <<<"$help" || fail "--help does not list the migrate command: $help"

log "entrypoint: node src/cli.ts definitions"
definitions=$(cd "$app" && env -i PATH=/usr/bin:/bin HOME=/nonexistent NODE_ENV=production "${run_as[@]}" \
  "$node_bin" src/cli.ts definitions 2>&1) || fail "node src/cli.ts definitions failed: $definitions"
grep -q "BALANCE_CALCULATION" <<<"$definitions" || fail "definitions printed no BALANCE_CALCULATION: $definitions"

log "ok: image build steps pass ($(du -sh "$app/node_modules" | cut -f1) of production node_modules)"
