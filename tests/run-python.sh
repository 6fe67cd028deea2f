#!/usr/bin/env bash
# Run the end-to-end Python suites (tests/sdk, tests/mcp) against the real
# stack-server binary, with clients written outside this project (the
# getstack SDK, the official mcp package, httpx).
#
#   tests/run-python.sh [pytest args...]   (test paths among them replace the default suites)
#
# Needs the server built first (cargo build -p stack-server); this script does
# not build it. Env:
#   STACK_SERVER_BIN         server binary (default target/debug/stack-server)
#   STACK_TEST_POSTGRES_URL  e.g. postgres://postgres@127.0.0.1:5432/postgres;
#                            when set, every suite also runs on PostgreSQL
#                            (a fresh database per server, dropped afterwards)
#   PYTHON                   interpreter used to create the venv (default python3)
# Exits with pytest's exit code.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/pyenv"
req="$repo/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv"; then
    echo "run-python.sh: could not create a virtualenv with '$python -m venv' (on Debian: apt-get install python3-venv)" >&2
    exit 2
  fi
fi

want="$( { sha256sum "$req" | cut -d' ' -f1; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "run-python.sh: installing tests/requirements.txt into target/pyenv" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip </dev/null
  "$venv/bin/python" -m pip install --quiet -r "$req" </dev/null
  echo "$want" > "$stamp"
fi

bin="${STACK_SERVER_BIN:-$repo/target/debug/stack-server}"
if [ ! -x "$bin" ]; then
  echo "run-python.sh: stack-server binary not found at $bin" >&2
  echo "run-python.sh: build it first (cargo build -p stack-server) or set STACK_SERVER_BIN" >&2
  exit 2
fi
export STACK_SERVER_BIN="$bin"

cd "$repo"
set +e
# Both suites unless the arguments name test paths of their own.
suites=(tests/sdk tests/mcp)
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then suites=(); break; fi
done
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${suites[@]}" "$@" </dev/null
code=$?
set -e
exit "$code"
