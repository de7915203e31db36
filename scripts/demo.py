"""The demo: a kernels-only Jupyverse as "the remote", a JupyterLab front with this plugin and
local kernels next to the remote ones.

Each server has its own auth directory and a generated token; the front reaches the remote
with the remote's token (passed through the environment, not the command line). State (logs,
auth directories, the front's SQLite store) lives under `<workdir>/state/`; JupyterLab shows
`<workdir>/notebooks/`, which holds one example notebook only; remote kernels start in
`<workdir>/remote-files/`. Stop with Ctrl-C: both servers and their kernels are ended.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
from pathlib import Path

from tests.support.servers import Server, free_port, front_server, remote_server

NOTEBOOK = "where-does-my-kernel-run.ipynb"

# The cell the example notebook runs. FRONT is filled in by this script when it has started
# the front: a kernel cannot ask the front where it runs.
WHERE_CODE = '''\
import os, socket
from pathlib import Path

# Written by scripts/demo.py when it started the front (the JupyterLab server you use):
FRONT = {front}

def parent_of(pid):
    try:  # Linux: field 4 of /proc/<pid>/stat
        return int(Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None

kernel = {{"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd()}}
width = max(len(str(value)) for value in kernel.values()) + 4
print(f"{{'':6}}{{'this kernel':<{{width}}}}the front")
for key in ("host", "pid", "cwd"):
    print(f"{{key:<6}}{{kernel[key]!s:<{{width}}}}{{FRONT[key]}}")
server = os.getppid()
print()
print(f"This kernel was started by the kernel server with pid {{server}}, itself started by "
      f"pid {{parent_of(server)}}.")
if parent_of(server) == FRONT["pid"]:
    print("That is the front: a local kernel, run by the front's own kernel server.")
else:
    print("That is not the front: a remote kernel. The front only relays its messages.")
'''

INTRO = """\
# Where does my kernel run?

This JupyterLab is served by the **front**: a Jupyverse with fps-remote-kernels, which serves
the kernels API from other servers. Its kernel menu offers

- **Python 3 (remote)**: kernels on the *remote* kernel server (in this demo, a second
  Jupyverse on this machine; in real use a GPU box, a cluster, a kernel gateway);
- **Python 3 (local)**: kernels on the front's own machine, in a kernel server that the front
  starts and supervises (`remote_kernels.local_kernels=true`).

Run the cell below, then switch the kernel (*Kernel → Change Kernel...*) and run it again:
the kernel's process and working directory change, the front's stay.
"""


def port_or_free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def example_notebook(front: Server, local: bool) -> dict:
    assert front.process is not None
    where = {"host": socket.gethostname(), "pid": front.process.pid,
             "cwd": str(front.cwd or front.workdir)}
    intro = INTRO if local else INTRO.replace(
        "- **Python 3 (local)**", "- (with `--local`) **Python 3 (local)**")
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel) (remote)",
                           "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": intro},
            {"cell_type": "code", "id": "where", "metadata": {}, "execution_count": None,
             "outputs": [], "source": WHERE_CODE.format(front=json.dumps(where))},
        ],
    }


def main() -> None:
    # Handlers, not a blocked signal mask: the servers would inherit the mask and ignore the
    # SIGTERM that stops them.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--front-port", type=int, default=8000)
    parser.add_argument("--remote-port", type=int, default=8002)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--no-local", dest="local", action="store_false",
                        help="no local kernels: remote ones only")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    state, root = workdir / "state", workdir / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    # With this package loaded on the remote too, as the README recommends for Jupyverse.
    remote = remote_server(state / "remote", port=port_or_free(args.remote_port),
                           with_plugin=True)
    # Its kernels start in a directory of their own, as on another machine.
    remote.cwd = workdir / "remote-files"
    remote.cwd.mkdir(exist_ok=True)
    front = front_server(state / "front", remote.url, remote.token, ui=True,
                         port=port_or_free(args.front_port), root=root,
                         extra=["--set", f"remote_kernels.local_kernels={args.local}"])
    try:
        print(f"Starting the remote (kernels only) on {remote.url} ...", flush=True)
        remote.start()
        print(f"Starting the front (JupyterLab + fps-remote-kernels) on {front.url} ...",
              flush=True)
        front.start()
        # Written afresh at each start: it carries this front's pid.
        (root / NOTEBOOK).write_text(json.dumps(example_notebook(front, args.local), indent=1))
        print(
            "\nOpen JupyterLab, then the example notebook:\n\n"
            # `/?token=` logs the browser in (a cookie), then sends it to the notebook.
            f"    {front.url}?token={front.token}&redirect=/lab/tree/{NOTEBOOK}\n\n"
            f"Notebooks: {root}\nState and logs: {state} ({front.log_path.name}, "
            f"{remote.log_path.name})\n"
            "Press Ctrl-C to stop both servers.",
            flush=True,
        )
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping ...", flush=True)
        front.stop()
        remote.stop()


if __name__ == "__main__":
    os.environ.pop("REMOTE_KERNELS_TOKEN", None)  # the demo's remote has its own
    main()
