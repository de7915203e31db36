#!/usr/bin/env bash
# Set up everything the demo and the tests need, on a fresh machine, from this repository's files.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"

# Browser tests drive Debian's Chromium: a test tool's own browser download does not work on
# these machines, so `playwright install` is never run.
if [ ! -x /usr/bin/chromium ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

# The Node client tests (@jupyterlab/services). `npm ci` installs exactly the committed lock
# file; it reruns only when that file changed since the last install.
if [ ! -f tests/node/node_modules/.installed-lock.json ] \
   || ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-lock.json; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/node/package-lock.json tests/node/node_modules/.installed-lock.json
fi
