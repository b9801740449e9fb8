#!/usr/bin/env bash
# Lint, type-check and run the whole test suite in the project virtualenv.
# The tests run in parallel (pytest-xdist: one worker per core, at most 4); arguments go to pytest,
# so `scripts/test.sh -n 0` runs them in one process and `scripts/test.sh -m unit` runs the unit tier.
source "$(dirname "$0")/_venv.sh"
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -n auto --maxprocesses=4 --dist worksteal "$@"
