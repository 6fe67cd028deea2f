#!/usr/bin/env bash
# Real MCP clients against a real stack-server.
#
#   tests/clients/run.sh
#
# Installs Node 22 (npm package `node`), the MCP Inspector and Claude Code,
# pinned in package.json/package-lock.json, into target/clients with
# `npm ci` (the only network access: the npm registry; nothing once
# installed). Starts target/debug/stack-server (build it first: cargo build
# -p stack-server; STACK_SERVER_BIN names another binary) on a free port with
# a fresh data directory, reads the first operator's key from its stdout,
# then:
#   1. the Inspector's CLI mode lists the tools over Streamable HTTP with
#      `--header "Authorization: Bearer …"`: 80 tools (77 + 3 OAuth-app tools), known names present;
#   2. Claude Code, with HOME in a temp directory (no login, no model call):
#      `claude mcp add --transport http … --header …` then `claude mcp list`
#      must report the server connected.
# Stops the server with SIGTERM. Exits non-zero on any failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$repo/target/clients"
# The 77 tools of the product docs plus the three OAuth-app tools of upstream
# OAuth connections (stack_configure_oauth_app, stack_list_oauth_apps,
# stack_delete_oauth_app).
expected_tools=80
mkdir -p "$work"
cp "$repo/tests/clients/package.json" "$repo/tests/clients/package-lock.json" "$work/"
if [ ! -x "$work/node_modules/.bin/claude" ] || ! cmp -s "$repo/tests/clients/package-lock.json" "$work/node_modules/.package-lock.json.stamp" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund >&2)
  cp "$repo/tests/clients/package-lock.json" "$work/node_modules/.package-lock.json.stamp"
fi
export PATH="$work/node_modules/.bin:$PATH"   # node 22 first

bin="${STACK_SERVER_BIN:-$repo/target/debug/stack-server}"
if [ ! -x "$bin" ]; then
  echo "clients/run.sh: stack-server not found at $bin; build it first (cargo build -p stack-server) or set STACK_SERVER_BIN" >&2
  exit 1
fi

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$tmp/data" "$tmp/home"
STACK_DATA_DIR="$tmp/data" STACK_LISTEN="127.0.0.1:$port" STACK_LOG="${STACK_LOG:-warn}" \
  "$bin" >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
key=""
for _ in $(seq 1 150); do
  key="$(grep -o 'sk_live_op_[A-Za-z0-9_-]*' "$tmp/stdout" 2>/dev/null | head -1 || true)"
  if [ -n "$key" ] && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/stderr" >&2; fail "stack-server exited"; }
  sleep 0.1
done
[ -n "$key" ] || fail "no operator key (sk_live_op_…) on stack-server's stdout"
url="http://127.0.0.1:$port/mcp"
auth="Authorization: Bearer $key"

# 1. MCP Inspector, CLI mode.
echo "== inspector: tools/list" >&2
inspector_home="$tmp/home/inspector"
mkdir -p "$inspector_home"
if ! HOME="$inspector_home" mcp-inspector --cli "$url" --transport http --header "$auth" \
  --method tools/list >"$tmp/tools.json" 2>"$tmp/inspector.err"; then
  cat "$tmp/inspector.err" >&2
  fail "inspector tools/list exited non-zero"
fi
count="$(node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const names = (r.tools || []).map((t) => t.name);
  for (const n of ["stack_register_agent", "stack_audit_verify_chain", "stack_configure_oauth_app", "stack_simulate_intent"]) {
    if (!names.includes(n)) { console.error("missing tool " + n); process.exit(1); }
  }
  console.log(names.length);
' "$tmp/tools.json")" || fail "inspector output: $(head -c 500 "$tmp/tools.json")"
[ "$count" = "$expected_tools" ] || fail "inspector listed $count tools, expected $expected_tools"
echo "inspector: $count tools" >&2

# 2. Claude Code: configuration and health check only, never a model call.
echo "== claude code: mcp add / mcp list" >&2
claude_home="$tmp/home/claude"
mkdir -p "$claude_home"
(
  cd "$claude_home"
  export HOME="$claude_home" DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 \
    DISABLE_ERROR_REPORTING=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
  claude mcp add --transport http stack "$url" --header "$auth" >"$tmp/claude-add.out" 2>&1 ||
    { cat "$tmp/claude-add.out" >&2; exit 1; }
  timeout 120 claude mcp list >"$tmp/claude-list.out" 2>&1 || true
) || fail "claude mcp add exited non-zero"
cat "$tmp/claude-list.out" >&2
# `claude mcp list` exits 0 even when a server fails; read its verdict.
grep -E "^stack: .*Connected" "$tmp/claude-list.out" >/dev/null ||
  fail "claude mcp list does not report stack as connected"
echo "claude code: connected" >&2
echo "ok: inspector ($count tools) and claude code (connected)" >&2
