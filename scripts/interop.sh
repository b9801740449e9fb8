#!/usr/bin/env bash
# Interoperability tests: real MCP clients against `mediamux serve --sandbox`, and the built wheel
# installed alone into a clean virtualenv. Each client gets its own folder under .interop/ (gitignored):
#   .interop/node        Node 22 from the `node@22` npm package (the machine's Node may be older)
#   .interop/inspector   the MCP Inspector CLI (@modelcontextprotocol/inspector 2.x), run with that Node
#   .interop/agents      virtualenv: openai-agents (+ the mcp 2.x it resolves to)
#   .interop/langchain   virtualenv: langchain-mcp-adapters with mcp < 2 (a 2025-11-25-era client)
#   .interop/dist, .interop/wheel   the wheel, and a clean virtualenv with only it and its dependencies
# then runs tests/interop with each environment's own Python and ends with one line
# `interop: N passed, N failed, N skipped`. Exit status is non-zero if anything failed.
#
#   bash scripts/interop.sh                      # install what is missing or outdated, run everything
#   INTEROP_REINSTALL=1 bash scripts/interop.sh  # reinstall every client first
#
# The main suite (scripts/test.sh) does not collect tests/interop (pyproject's addopts ignores it).
source "$(dirname "$0")/_venv.sh" # set -euo pipefail, cd to the repo, .venv with mediamux installed

NODE_SPEC="node@22"
INSPECTOR_SPEC="@modelcontextprotocol/inspector@^2"
AGENTS_REQS=("openai-agents>=0.24,<1" "pytest>=8.3,<10")
LANGCHAIN_REQS=("langchain-mcp-adapters>=0.3.2,<1" "mcp>=1.30,<2" "pytest>=8.3,<10")
STEP_TIMEOUT_S=900 # any one install step or test run; CI's whole budget is 90 min

ROOT="$PWD"
DIR="$ROOT/.interop"
LOGS="$DIR/logs"
RESULTS="$DIR/results"
NODE22_BIN="$DIR/node/node_modules/.bin"
mkdir -p "$LOGS" "$RESULTS"
rm -f "$RESULTS"/*.xml
started=$SECONDS

STEP_LABEL=interop
STEP_FAILED="0 passed, 1 failed"
STEP_REINSTALL="${INTEROP_REINSTALL:-}"
source "$ROOT/scripts/_steps.sh"

# -- installs -------------------------------------------------------------------------------------

# npm looks for its global npmrc under its prefix: with --prefix DIR, or run by another Node, it would
# miss the machine's own (and with it settings such as the registry's CA file). Pin it for every npm.
if global_npmrc=$(npm config get globalconfig 2>/dev/null) && [ -f "$global_npmrc" ]; then
  export npm_config_globalconfig="$global_npmrc"
fi

if fresh "$DIR/node" "$NODE_SPEC"; then
  step node npm install --prefix "$DIR/node" --no-audit --no-fund "$NODE_SPEC"
  echo "$NODE_SPEC" >"$DIR/node/.interop-spec"
fi
node_version=$("$NODE22_BIN/node" --version) || die "$NODE22_BIN/node does not run (INTEROP_REINSTALL=1 reinstalls it)"
case "$node_version" in
  v2[2-9].* | v[3-9][0-9].*) ;;
  *) die "$NODE22_BIN/node is $node_version, the Inspector needs >= 22" ;;
esac

if fresh "$DIR/inspector" "$INSPECTOR_SPEC"; then
  # npm runs under Node 22 here, so it resolves the Inspector release that wants Node 22 (under the
  # machine's Node 20 it would quietly pick an old 0.x release whose engines range still admits 20).
  step inspector env PATH="$NODE22_BIN:$PATH" npm install --prefix "$DIR/inspector" --no-audit --no-fund "$INSPECTOR_SPEC"
  echo "$INSPECTOR_SPEC" >"$DIR/inspector/.interop-spec"
fi
inspector_version=$("$NODE22_BIN/node" "$DIR/inspector/node_modules/.bin/mcp-inspector" --cli --version) ||
  die "the Inspector CLI does not run (INTEROP_REINSTALL=1 reinstalls it)"

venv() { # venv NAME REQUIREMENT...: a virtualenv .interop/NAME with exactly these requirements
  local name=$1
  shift
  if fresh "$DIR/$name" "$*"; then
    step "$name-venv" "$PY" -m venv "$DIR/$name"
    step "$name" "$DIR/$name/bin/python" -m pip install --disable-pip-version-check "$@"
    echo "$*" >"$DIR/$name/.interop-spec"
  fi
}
venv agents "${AGENTS_REQS[@]}"
venv langchain "${LANGCHAIN_REQS[@]}"

# The wheel is rebuilt every run (the source changes); its virtualenv gets only what its metadata asks for.
rm -rf "$DIR/dist" "$DIR/wheel"
step wheel-build .venv/bin/python -m pip wheel --disable-pip-version-check --no-deps -w "$DIR/dist" .
wheels=("$DIR"/dist/mediamux-*.whl)
step wheel-venv "$PY" -m venv "$DIR/wheel"
step wheel-install "$DIR/wheel/bin/python" -m pip install --disable-pip-version-check "${wheels[0]}"

pyversion() { "$1" -c "from importlib.metadata import version; print(' '.join(f'{n} {version(n)}' for n in '${*:2}'.split()))"; }
echo "interop: clients: node $node_version, inspector $inspector_version;" \
  "agents venv: $(pyversion "$DIR/agents/bin/python" openai-agents mcp);" \
  "langchain venv: $(pyversion "$DIR/langchain/bin/python" langchain-mcp-adapters langchain-core mcp);" \
  "wheel venv: $(pyversion "$DIR/wheel/bin/python" mediamux mcp)"
installed=$SECONDS

# -- tests: each file with the Python that has its client ---------------------------------------------

export INTEROP_STRICT=1 # a missing client fails its tests here instead of skipping them
failed_runs=0
suite() { # suite NAME PYTHON FILE...
  local name=$1 python=$2 rc=0 t0=$SECONDS
  shift 2
  echo "interop: -- $name ($python)"
  # --confcutdir: tests/conftest.py imports mediamux, which the client venvs do not have.
  # -o addopts=: pyproject's addopts ignores tests/interop for the main suite.
  timeout "$STEP_TIMEOUT_S" "$python" -m pytest "$@" --confcutdir=tests/interop -o addopts= \
    -p no:cacheprovider -ra --strict-markers -q --junitxml="$RESULTS/$name.xml" || rc=$?
  echo "interop: -- $name finished in $((SECONDS - t0)) s (exit $rc)"
  [ "$rc" -eq 0 ] || failed_runs=$((failed_runs + 1))
}
suite inspector-and-wheel .venv/bin/python tests/interop/test_inspector.py tests/interop/test_wheel.py
suite openai-agents "$DIR/agents/bin/python" tests/interop/test_openai_agents.py
suite langchain "$DIR/langchain/bin/python" tests/interop/test_langchain.py

echo "interop: installs $((installed - started)) s, tests $((SECONDS - installed)) s, total $((SECONDS - started)) s"
.venv/bin/python - "$RESULTS" "$failed_runs" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results, failed_runs = Path(sys.argv[1]), int(sys.argv[2])
passed = failed = skipped = 0
for report in sorted(results.glob("*.xml")):
    for suite in ET.parse(report).getroot().iter("testsuite"):
        tests, skip = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed += tests - skip - bad
        failed += bad
        skipped += skip
# A run that crashed or collected nothing (pytest exit 2..5) counts as a failure even with no test failed.
failed = max(failed, failed_runs)
print(f"interop: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
EOF
