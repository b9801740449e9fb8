#!/usr/bin/env bash
# Lint, type-check and run the whole test suite in the project virtualenv.
source "$(dirname "$0")/_venv.sh"
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
