#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance) against
# `mediamux serve --transport http --sandbox`, for both requirement sets (2026-07-28 and
# 2025-11-25), each with its expected-failures file under tests/conformance/ (only checks that need
# the suite's own fixture tools, prompts and resources are listed there, each with its reason).
#
#   .interop/node                     Node 22 (the `node@22` npm package; shared with scripts/interop.sh)
#   .interop/conformance              the suite, pinned below
#   .interop/conformance-results/     one folder per run (each scenario's checks.json), and logs/
#
# Ends with one line `conformance: N passed, N failed, N expected, N not scored` (checks). Exit
# status is non-zero on any unexpected failure, a stale expected-failures entry, or a run that
# crashed or timed out.
#
#   bash scripts/conformance.sh
#   CONFORMANCE_REINSTALL=1 bash scripts/conformance.sh   # reinstall Node and the suite first
#   CONFORMANCE_NODE=/path/to/node CONFORMANCE_PACKAGE_DIR=/path/with/node_modules \
#     bash scripts/conformance.sh                         # use an existing install (must be the pinned version)
#
# Another server (a fixture server) joins with one line at the end of the runs section:
#   start_server NAME COMMAND... --port {port} && run_suite NAME "$URL" 2026-07-28 SCENARIO...
# (with scenarios named, each runs alone at that revision's wire version, with no expected failures).
source "$(dirname "$0")/_venv.sh" # set -euo pipefail, cd to the repo, .venv with mediamux installed

NODE_SPEC="node@22"
CONFORMANCE_VERSION="0.2.0-alpha.12"
CONFORMANCE_SPEC="@modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
STEP_TIMEOUT_S=900   # one install, or one run of a requirement set (about a minute when healthy)
SERVER_START_S=120   # until /healthz says ready
SCENARIO_TIMEOUT_MS=30000

ROOT="$PWD"
DIR="$ROOT/.interop"
RESULTS="$DIR/conformance-results"
LOGS="$RESULTS/logs"
BASELINES="$ROOT/tests/conformance"
rm -rf "$RESULTS"
mkdir -p "$LOGS"
started=$SECONDS

STEP_LABEL=conformance
STEP_FAILED="0 passed, 1 failed, 0 expected, 0 not scored"
STEP_REINSTALL="${CONFORMANCE_REINSTALL:-}"
source "$ROOT/scripts/_steps.sh"

# -- installs -------------------------------------------------------------------------------------

if [ -n "${CONFORMANCE_NODE:-}" ]; then
  NODE="$CONFORMANCE_NODE"
  PACKAGE_DIR="${CONFORMANCE_PACKAGE_DIR:?set CONFORMANCE_PACKAGE_DIR with CONFORMANCE_NODE}"
else
  # As in scripts/interop.sh: npm run by another Node, or with --prefix, would miss the machine's
  # global npmrc (and settings such as the registry's CA file).
  if global_npmrc=$(npm config get globalconfig 2>/dev/null) && [ -f "$global_npmrc" ]; then
    export npm_config_globalconfig="$global_npmrc"
  fi
  if fresh "$DIR/node" "$NODE_SPEC"; then
    step node npm install --prefix "$DIR/node" --no-audit --no-fund "$NODE_SPEC"
    echo "$NODE_SPEC" >"$DIR/node/.interop-spec"
  fi
  NODE="$DIR/node/node_modules/.bin/node"
  PACKAGE_DIR="$DIR/conformance"
  if fresh "$PACKAGE_DIR" "$CONFORMANCE_SPEC"; then
    # Under Node 22, so npm checks the suite's engines range against the Node that will run it.
    step suite env PATH="$(dirname "$NODE"):$PATH" npm install --prefix "$PACKAGE_DIR" --no-audit --no-fund "$CONFORMANCE_SPEC"
    echo "$CONFORMANCE_SPEC" >"$PACKAGE_DIR/.interop-spec"
  fi
fi
node_version=$("$NODE" --version) || die "$NODE does not run (CONFORMANCE_REINSTALL=1 reinstalls it)"
case "$node_version" in
  v2[2-9].* | v[3-9][0-9].*) ;;
  *) die "$NODE is $node_version, the conformance suite needs >= 22" ;;
esac
SUITE="$PACKAGE_DIR/node_modules/@modelcontextprotocol/conformance"
suite_version=$("$NODE" -p "require('$SUITE/package.json').version") ||
  die "the suite is not installed under $PACKAGE_DIR (CONFORMANCE_REINSTALL=1 reinstalls it)"
[ "$suite_version" = "$CONFORMANCE_VERSION" ] ||
  die "the suite under $PACKAGE_DIR is $suite_version, this script pins $CONFORMANCE_VERSION"
echo "conformance: node $node_version, suite $suite_version"
installed=$SECONDS

# -- servers --------------------------------------------------------------------------------------

SERVER_PIDS=()
cleanup() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${SERVER_PIDS[@]}"; do
    # uvicorn finishes within a second or two; a server that does not is not waited on for ever.
    timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

free_port() {
  .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server NAME COMMAND...: run COMMAND (every "{port}" replaced by a free loopback port) with
# its own MEDIAMUX_HOME, wait until http://127.0.0.1:PORT/healthz answers, and set URL to its /mcp.
# A server without /healthz is waited on until its port accepts connections.
start_server() {
  local name=$1 port home args=() arg t0=$SECONDS
  shift
  port=$(free_port)
  home="$RESULTS/$name-home"
  mkdir -p "$home"
  for arg in "$@"; do args+=("${arg//\{port\}/$port}"); done
  MEDIAMUX_HOME="$home" "${args[@]}" >"$LOGS/$name-server.log" 2>&1 &
  SERVER_PIDS+=($!)
  URL="http://127.0.0.1:$port/mcp"
  .venv/bin/python - "$port" "$SERVER_START_S" "$!" <<'EOF' || { tail -n 40 "$LOGS/$name-server.log" >&2; die "$name did not start within ${SERVER_START_S}s; the lines above end $LOGS/$name-server.log"; }
import json, os, socket, sys, time, urllib.request

port, budget, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + budget
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the server exited")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            if json.load(answer).get("ready", True):
                sys.exit(0)
    except urllib.error.HTTPError:  # no /healthz: an open port will do
        sys.exit(0)
    except (OSError, ValueError):
        pass
    time.sleep(0.2)
sys.exit("timed out")
EOF
  echo "conformance: $name serving at $URL ($((SECONDS - t0)) s)"
}

# -- runs -----------------------------------------------------------------------------------------

RUNS=() # "label|requirements|exit status|scenario scenario..." for the summary
# run_suite LABEL URL REQUIREMENTS [SCENARIO...]: without scenarios, the whole requirement set with
# tests/conformance/expected-failures-REQUIREMENTS.yml; with scenarios, each of them alone at
# REQUIREMENTS' wire version, where every check must pass.
run_suite() {
  local label=$1 url=$2 requirements=$3 rc=0 t0=$SECONDS out scenario
  shift 3
  out="$RESULTS/$label-$requirements"
  mkdir -p "$out"
  echo "conformance: -- $label, $requirements${*:+ ($*)}"
  if [ $# -eq 0 ]; then
    timeout "$STEP_TIMEOUT_S" "$NODE" "$SUITE/dist/index.js" server --url "$url" --requirements "$requirements" \
      --expected-failures "$BASELINES/expected-failures-$requirements.yml" --timeout "$SCENARIO_TIMEOUT_MS" \
      -o "$out" >"$LOGS/$label-$requirements.log" 2>&1 || rc=$?
  else
    # Extension scenarios (the tasks extension) are skipped under a --spec-version: run them bare.
    local version=(--spec-version "$requirements")
    [ "$requirements" = extensions ] && version=()
    for scenario in "$@"; do
      timeout "$STEP_TIMEOUT_S" "$NODE" "$SUITE/dist/index.js" server --url "$url" --scenario "$scenario" \
        "${version[@]}" --timeout "$SCENARIO_TIMEOUT_MS" \
        -o "$out" >>"$LOGS/$label-$requirements.log" 2>&1 || rc=$?
    done
  fi
  # The suite's own verdict on what it did not expect (its ANSI colours removed).
  sed 's/\x1b\[[0-9;]*m//g' "$LOGS/$label-$requirements.log" |
    awk '/^(Stale baseline entries|Unexpected failures \(not in baseline\))/ {show = 1} /^$/ {show = 0} show' || true
  echo "conformance: -- $label, $requirements finished in $((SECONDS - t0)) s (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out"))"
  RUNS+=("$label|$requirements|$rc|$*")
}

start_server mediamux .venv/bin/mediamux serve --transport http --sandbox --host 127.0.0.1 --port "{port}"
run_suite mediamux "$URL" 2026-07-28
run_suite mediamux "$URL" 2025-11-25
# The tasks extension's scenarios call fixture tools (slow_compute, failing_job, …): a small server
# built on mediamux's own tasks module and job engine (tests/conformance/tasks_fixture.py) serves them.
# Not run: tasks-mrtr-input, which needs a task that stops mid-run to ask for input; no mediamux job
# does (confirmation before spending is asked before the task exists: tasks-mrtr-composition).
start_server tasks-fixture env PYTHONPATH=src:. .venv/bin/python tests/conformance/tasks_fixture.py --port "{port}"
run_suite tasks-fixture "$URL" extensions tasks-lifecycle tasks-capability-negotiation tasks-wire-fields \
  tasks-request-state-removal tasks-request-headers tasks-dispatch-and-envelope tasks-status-notifications \
  tasks-required-task-error tasks-mrtr-composition

# -- summary --------------------------------------------------------------------------------------

echo "conformance: installs $((installed - started)) s, runs $((SECONDS - installed)) s, total $((SECONDS - started)) s"
.venv/bin/python - "$RESULTS" "$SUITE/requirements" "$BASELINES" "${RUNS[@]}" <<'EOF'
"""Count checks the way the suite judges them: FAILURE and WARNING fail unless the baseline lists
the check (or its whole scenario); only the requirement set's scored scenarios count."""

import json
import re
import sys
from pathlib import Path

results, requirements, baselines = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
runs = sys.argv[4:]


def listed(path: Path, key: str) -> list[str]:
    """The entries of a top-level list in the suite's simple YAML files (no YAML library needed)."""
    if not path.exists():
        return []
    text = path.read_text()
    block = re.search(rf"^{key}:\n((?:[ \t]*(?:- .*|#.*)?\n)+)", text, re.M)
    entries = re.findall(r"^\s*-\s+([^\s#]+)", block.group(1), re.M) if block else []
    return [e.strip("'\"") for e in entries]


passed = failed = expected = unscored = 0
for run in runs:
    label, revision, status, scenarios = run.split("|")
    failed_before = failed
    out = results / f"{label}-{revision}"
    if scenarios:
        scored, baseline = set(scenarios.split()), set()
    else:
        scored = set(listed(requirements / f"{revision}.yaml", "server"))
        baseline = set(listed(baselines / f"expected-failures-{revision}.yml", "server"))
    for checks_file in sorted(out.glob("*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks_file.parent.name)
        for check in json.loads(checks_file.read_text()):
            bad = check.get("status") in ("FAILURE", "WARNING")
            if check.get("status") == "SUCCESS":
                passed += 1
            elif not bad:
                continue
            elif scenario not in scored:
                unscored += 1
            elif scenario in baseline or f"{scenario}:{check.get('id')}" in baseline:
                expected += 1
            else:
                failed += 1
    if status != "0" and failed == failed_before:
        failed += 1  # the suite failed the run for what no check shows: a stale entry, a crash, a timeout
print(f"conformance: {passed} passed, {failed} failed, {expected} expected, {unscored} not scored")
sys.exit(1 if failed else 0)
EOF
