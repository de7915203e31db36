#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs).
# `--fast`: the in-process tier only (tests marked `fast`: no servers started, no remotes),
# after lint and types; set-up runs only when there is no virtualenv yet.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fast" ]; then
  shift
  [ -x .venv/bin/python ] || bash scripts/setup.sh
  .venv/bin/ruff check .
  .venv/bin/mypy
  exec .venv/bin/python -m pytest -m fast "$@"
fi
bash scripts/setup.sh
# Lint and types first: they take seconds and say more than a failing test.
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
