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
.venv/bin/python -m pip install --quiet -e . --group test

# Browser tests drive Debian's Chromium: a test tool's own browser download does not work on
# these machines, so `playwright install` is never run.
if [ ! -x /usr/bin/chromium ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

# The Enterprise Gateway SSH test (tests/test_eg_ssh.py) starts its own sshd on loopback
# addresses, with its own config and keys; the package's own service is never started.
if [ ! -x /usr/sbin/sshd ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server
fi

# The proxy tests (tests/remote/test_proxy.py) run Debian's tinyproxy as the forward proxy, on
# a loopback port with a config of their own; the package's own service is never started.
if [ ! -x /usr/bin/tinyproxy ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tinyproxy
  # Debian's package starts its service where there is an init system: not ours to run.
  ($SUDO service tinyproxy stop || true) >/dev/null 2>&1
fi

# The Node client tests (@jupyterlab/services). `npm ci` installs exactly the committed lock
# file; it reruns only when that file changed since the last install.
if [ ! -f tests/support/node/node_modules/.installed-lock.json ] \
   || ! cmp -s tests/support/node/package-lock.json tests/support/node/node_modules/.installed-lock.json; then
  (cd tests/support/node && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/support/node/package-lock.json tests/support/node/node_modules/.installed-lock.json
fi

# Enterprise Gateway 3.3 pins jupyter_server<2, jupyter_client<7 and pyzmq<25: it gets its own
# virtualenv, with the ipykernel its local kernels run (jupyter_client 6 starts the `python` of
# the python3 kernelspec as this virtualenv's python). Reinstalled only when the list changes.
EG_REQUIREMENTS=("jupyter_enterprise_gateway==3.3.0" "ipykernel>=6.29,<7")
if [ ! -x .venv-eg/bin/python ]; then
  "$PYTHON" -m venv .venv-eg
fi
if [ "$(cat .venv-eg/.installed 2>/dev/null)" != "${EG_REQUIREMENTS[*]}" ]; then
  .venv-eg/bin/python -m pip install --quiet --upgrade pip
  .venv-eg/bin/python -m pip install --quiet "${EG_REQUIREMENTS[@]}"
  .venv-eg/bin/python -c "import enterprise_gateway, ipykernel, jupyter_client"
  echo "${EG_REQUIREMENTS[*]}" > .venv-eg/.installed
fi
