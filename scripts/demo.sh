#!/usr/bin/env bash
# The demo: a remote Jupyverse running kernels and a JupyterLab front serving them through
# fps-remote-kernels. Prints the URL to open. It installs what the demo needs only (the
# package and ipykernel); the tests' tooling (browsers, gateways, Node) is scripts/setup.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[kernel-host]'
exec .venv/bin/python scripts/demo.py "$@"
