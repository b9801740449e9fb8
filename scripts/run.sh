#!/usr/bin/env bash
# Runs mediamux in its own virtualenv.
#   no arguments, no provider key set  -> `mediamux demo`: a guided tour against the built-in emulators
#   no arguments, a provider key set   -> `mediamux serve --transport http` on 127.0.0.1:8765
#   arguments                          -> passed to `mediamux` as they are (e.g. `serve --sandbox`)
source "$(dirname "$0")/_venv.sh"
if [ "$#" -gt 0 ]; then
  exec .venv/bin/mediamux "$@"
fi
if [ -z "${MUSEAI_API_KEY:-}${MUZAIC_API_KEY:-}${MIXPEEK_API_KEY:-}${MUAPI_API_KEY:-}" ]; then
  exec .venv/bin/mediamux demo
fi
exec .venv/bin/mediamux serve --transport http
