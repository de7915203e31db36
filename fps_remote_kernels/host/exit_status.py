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


def under_cli() -> bool:
    """Whether this process is the `jupyverse` or `fps` command (not a program embedding it)."""
    return Path(sys.argv[0]).name in _CLIS


class StartRefused(Exception):
    """A mistake of the user's that stops start-up, said already in one line."""


def refuse_to_start(message: str, failures: list[Exception] | None = None) -> None:
    """Stop start-up for a mistake of the user's with one line that says it, and exit status 1
    (fps would print a traceback box of some 40 lines for it). `failures`: fps's list of the
    running application's failures (`Module.exceptions`); an entry there, never raised, stops
    the application before it starts serving. None: before the application runs, exit at
    once. A program that embeds the module gets the error raised instead."""
    if not under_cli():
        raise RuntimeError(message)
    if failures is not None:
        failures.append(StartRefused(message))  # fps says it, without a traceback
        return
    print(f"fps-remote-kernels: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def exit_nonzero_on_failure(failures: Sequence[BaseException]) -> None:
    """At exit, end the process with status 1 if `failures` (fps's list) is not empty."""
    if not under_cli() or id(failures) in _registered:
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
