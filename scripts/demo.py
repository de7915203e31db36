"""The demo: a kernels-only Jupyverse as "the remote", a JupyterLab front with this plugin.

Each server has its own auth directory and a generated token; the front reaches the remote
with the remote's token (passed through the environment, not the command line). Stop with
Ctrl-C: both servers and their kernels are ended.
"""

from __future__ import annotations

import argparse
import signal
import socket
from pathlib import Path

from fps_remote_kernels.launch import free_port, front_server, remote_server


def port_or_free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--front-port", type=int, default=8000)
    parser.add_argument("--remote-port", type=int, default=8002)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    # With this package loaded on the remote too, as the README recommends for Jupyverse.
    remote = remote_server(workdir / "remote", port=port_or_free(args.remote_port),
                           with_plugin=True)
    front = front_server(workdir / "front", remote.url, remote.token, ui=True,
                         port=port_or_free(args.front_port))
    try:
        print(f"Starting the remote (kernels only) on {remote.url} ...", flush=True)
        remote.start()
        print(f"Starting the front (JupyterLab + fps-remote-kernels) on {front.url} ...",
              flush=True)
        front.start()
        print(
            "\nOpen JupyterLab (kernels run on the remote):\n\n"
            f"    {front.url}?token={front.token}\n\n"
            f"Logs: {front.log_path} and {remote.log_path}\n"
            "Press Ctrl-C to stop both servers.",
            flush=True,
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping ...", flush=True)
        front.stop()
        remote.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
