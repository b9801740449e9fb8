# Shared by scripts/interop.sh and scripts/conformance.sh: bounded, logged install and run steps.
# The caller sets STEP_LABEL (the prefix of every line), STEP_FAILED (the closing line CI reads when a
# step fails), LOGS, STEP_TIMEOUT_S, and STEP_REINSTALL (non-empty: reinstall every folder).

die() { # die MESSAGE: explain, print the closing line CI reads, stop
  echo "$STEP_LABEL: $1" >&2
  echo "$STEP_LABEL: $STEP_FAILED"
  exit 1
}

# step NAME CMD...: run CMD (bounded), log to LOGS/NAME.log; on failure show the log's tail and stop.
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  timeout "$STEP_TIMEOUT_S" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$LOGS/$name.log" >&2
    die "$name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after ${STEP_TIMEOUT_S}s")); the lines above end $LOGS/$name.log"
  fi
  echo "$STEP_LABEL: $name ok ($((SECONDS - t0)) s)"
}

# fresh FOLDER SPEC: true when FOLDER must be (re)installed for SPEC, and clears it for that.
fresh() {
  local folder=$1 spec=$2
  if [ -z "${STEP_REINSTALL:-}" ] && [ -f "$folder/.interop-spec" ] && [ "$(cat "$folder/.interop-spec")" = "$spec" ]; then
    return 1
  fi
  rm -rf "$folder"
  mkdir -p "$folder"
  return 0
}
