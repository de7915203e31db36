"""A non-zero exit status when the server fails to start.

fps logs a module's start-up failure ("Application failed") and then returns normally, so
`jupyverse` and `fps` exit with 0: a container runtime or a service manager reads that as a
clean stop. The failures fps records are kept in one list shared by all modules; at exit, if
that list holds any failure other than a slow stop, the process exits with 1.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Only the command-line servers: a program that runs the module in-process keeps its own status.
_CLIS = {"jupyverse", "fps"}
_registered: set[int] = set()


def exit_nonzero_on_failure(failures: Sequence[BaseException]) -> None:
    """At exit, end the process with status 1 if `failures` (fps's list) is not empty."""
    if Path(sys.argv[0]).name not in _CLIS or id(failures) in _registered:
        return
    _registered.add(id(failures))
    atexit.register(_exit_if_failed, failures)


def _exit_if_failed(failures: Sequence[BaseException]) -> None:
    if all(_slow_stop(e) for e in failures):
        return
    # os._exit skips the handlers registered before this one (logging's among them).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _slow_stop(error: BaseException) -> bool:
    # A module that took longer than --stop-timeout to stop: fps says so; the server did run.
    return isinstance(error, TimeoutError) and "while stopping" in str(error)
