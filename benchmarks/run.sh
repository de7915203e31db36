#!/usr/bin/env bash
# The benchmark in one command: set up (virtualenv, package, Nginx), then run it.
# Arguments go to the benchmark: `bash benchmarks/run.sh --smoke`, `... --markdown`, `... --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx
fi
exec .venv/bin/python -m benchmarks.bench "$@"
