#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance,
# pinned in package.json/package-lock.json) against a real stack-server.
#
#   tests/conformance/run.sh [extra conformance args...]
#
# Installs Node 22 (the npm package `node`) and the suite into
# target/conformance with `npm ci`, then runs two passes, each against a
# stack-server started on a free port with a throw-away SQLite database:
#   1. the test-only `conformance-fixtures` build (it serves the suite's
#      fixture tools, resources and prompts, and lends requests without an
#      Authorization header the key of a fresh operator): every server
#      scenario that applies to STACK;
#   2. the normal build behind bearer-proxy.mjs (which adds the header the
#      suite cannot send): the scenarios that need no fixtures.
# docs/mcp.md lists the scenarios that do not apply, and why. Exits non-zero
# when a scenario fails.
#
# STACK_CONFORMANCE_SCENARIOS / STACK_CONFORMANCE_NORMAL_SCENARIOS override
# the scenario lists (an empty value skips that pass); STACK_CONFORMANCE_BIN
# skips the builds and uses that fixtures binary (the normal pass then uses
# target/debug/stack-server).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$repo/target/conformance"
mkdir -p "$work"
cp "$repo/tests/conformance/package.json" "$repo/tests/conformance/package-lock.json" "$work/"
if [ ! -x "$work/node_modules/.bin/conformance" ] || ! cmp -s "$repo/tests/conformance/package-lock.json" "$work/node_modules/.package-lock.json.stamp" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund >&2)
  cp "$repo/tests/conformance/package-lock.json" "$work/node_modules/.package-lock.json.stamp"
fi
export PATH="$work/node_modules/.bin:$PATH"   # node 22 first

# The fixtures build is made in the usual target directory (only
# stack-server relinks) and copied aside, then the normal binary is rebuilt
# so target/debug/stack-server never stays a fixtures build.
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin="${STACK_CONFORMANCE_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build -p stack-server --features conformance-fixtures >&2)
  cp "$target_dir/debug/stack-server" "$work/stack-server"
  (cd "$repo" && cargo build -p stack-server >&2)
  bin="$work/stack-server"
fi
normal_bin="$target_dir/debug/stack-server"

# Scenarios that apply to a stateless, authenticated server.
fixture_scenarios="${STACK_CONFORMANCE_SCENARIOS-server-initialize logging-set-level ping completion-complete tools-list tools-call-simple-text tools-call-image tools-call-audio tools-call-embedded-resource tools-call-mixed-content tools-call-with-logging tools-call-error tools-call-with-progress json-schema-2020-12 resources-list resources-read-text resources-read-binary resources-templates-read prompts-list prompts-get-simple prompts-get-with-args prompts-get-embedded-resource prompts-get-with-image dns-rebinding-protection}"
normal_scenarios="${STACK_CONFORMANCE_NORMAL_SCENARIOS-server-initialize logging-set-level ping tools-list dns-rebinding-protection}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
wait_healthy() {
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "stack-server on port $1 did not come up" >&2
  return 1
}

failed=0
# run_pass LABEL BINARY PROXY(yes|no) SCENARIOS
run_pass() {
  local label="$1" server="$2" proxy="$3" scenarios="$4"
  [ -n "$scenarios" ] || return 0
  local data port key url
  data="$(mktemp -d)"
  dirs+=("$data")
  port="$(free_port)"
  key="$(STACK_DATA_DIR="$data" "$server" operators create --name conformance 2>/dev/null | grep -o 'sk_live_[A-Za-z0-9_-]*' | head -1)"
  STACK_DATA_DIR="$data" STACK_LISTEN="127.0.0.1:$port" STACK_LOG="${STACK_LOG:-warn}" \
    STACK_CONFORMANCE_BEARER="$key" "$server" >"$data/stdout" 2>"$data/stderr" &
  pids+=($!)
  wait_healthy "$port"
  url="http://127.0.0.1:$port/mcp"
  if [ "$proxy" = yes ]; then
    local pport
    pport="$(free_port)"
    UPSTREAM="127.0.0.1:$port" BEARER="$key" LISTEN="$pport" node "$repo/tests/conformance/bearer-proxy.mjs" &
    pids+=($!)
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$pport/healthz" && break; sleep 0.1; done
    url="http://127.0.0.1:$pport/mcp"
  fi
  for s in $scenarios; do
    echo "== $label: $s" >&2
    if ! conformance server --url "$url" --scenario "$s" "${extra[@]}"; then
      failed=1
    fi
  done
}
extra=("$@")
run_pass fixtures "$bin" no "$fixture_scenarios"
run_pass normal "$normal_bin" yes "$normal_scenarios"
exit "$failed"
