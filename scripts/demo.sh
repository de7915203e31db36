#!/usr/bin/env bash
# Set everything up, then run the demo: a remote Jupyverse running kernels and a JupyterLab
# front serving them through fps-remote-kernels. Prints the URL to open.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
