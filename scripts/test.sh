#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every
# test (unit, race, fuzz seed corpora, real processes, real clients).
# Missing prerequisites fail the run; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

# System packages the tests run for real.
need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium) # the browser demo's test (e2e/browser_test.go)
command -v ip >/dev/null 2>&1 || need+=(iproute2) # network namespaces (e2e/netns_test.go)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "npm ci (interop clients: cometd, cometd-nodejs-client, faye; playwright-core for the browser test)"
(cd interop && npm ci --no-audit --no-fund --loglevel=error)

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '\.pb\.go$') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi

log "go vet"
go vet ./...

log "go test -race"
go test -race -count=1 -timeout 25m "$@" ./...
