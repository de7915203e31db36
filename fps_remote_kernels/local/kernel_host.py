"""Local kernels next to remote ones: the front runs a kernels-only Jupyverse of its own.

fps-kernels and this plugin cannot share one server (both serve `/api/kernels`), so with
`local_kernels` the front starts a child Jupyverse (fps-kernels, ipykernel) on a loopback port
and lists it as one more remote, named `local_name`. The child

- gets a token made here (`secrets.token_urlsafe`) through its environment, never its command
  line; it takes the variable out of its environment before Jupyverse starts (its kernels do not
  inherit it), and every line it writes is relayed into the front's log with the token scrubbed;
- gets none of the front's remote credentials (the variables named by `token_env` and
  `http_pwd_env`): local kernels must not read the remotes' tokens;
- has its own auth directory, in a private temporary directory removed when the front stops,
  and runs in the front's working directory (its kernels start beside the front's notebooks);
- runs in a process group of its own, with its kernels; it is restarted when it exits (bounded
  exponential backoff, each exit logged) and stopped with the front: SIGTERM to the group, then
  SIGKILL for what is left;
- ends its whole group by itself when its stdin (a pipe from the front) closes, so that even a
  front killed with SIGKILL leaves no kernels behind.

The front does not wait for it: like any remote, it is left out of listings until it answers.
Run as `python -m fps_remote_kernels.local.kernel_host ARGS`, this module is the child's entry
point.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
import anyio.abc
import httpx
import structlog

from ..config import RemoteConfig, RemoteKernelsConfig
from .processes import REMOTE_PLUGINS, descendants, disabled_except, free_port, kill_survivors

logger = structlog.get_logger()

# The child reads its token from this variable, then removes it from its environment.
TOKEN_VARIABLE = "FPS_REMOTE_KERNELS_LOCAL_TOKEN"
# Its state directory (auth database), which it removes itself if the front is killed.
STATE_VARIABLE = "FPS_REMOTE_KERNELS_LOCAL_STATE"
STATE_PREFIX = "fps-remote-kernels-local-"
# Restart backoff: doubled after each quick exit, back to the minimum after a stable run.
MIN_BACKOFF, MAX_BACKOFF, STABLE_RUN = 1.0, 30.0, 60.0
# Seconds the child gets to exit after SIGTERM before its group is killed. Short: fps gives all
# of the front's modules 1 s to stop (--stop-timeout), and its kernels, in its group, get the
# SIGTERM themselves.
STOP_GRACE = 0.5
# The same when the front is gone (nothing else waits then).
ORPHAN_STOP_GRACE = 5.0
# Longest line of the child's output relayed as one log entry; the rest of it is dropped.
MAX_LINE = 16 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LocalKernels:
    """The supervisor of the front's local kernel server: `remote` is what the front's client
    uses to reach it; `run()` keeps it running until `stop()`."""

    def __init__(self, config: RemoteKernelsConfig, cwd: Path | None = None) -> None:
        self.name = config.local_name
        self.port = config.local_port or free_port()
        self.cwd = cwd or Path.cwd()
        self.start_timeout = config.local_start_timeout
        self._token = secrets.token_urlsafe(32)
        self.remote = RemoteConfig(name=self.name, url=f"http://127.0.0.1:{self.port}/",
                                   token=self._token, kind="jupyverse")
        # Not inherited by the child: the remotes' credentials.
        self._withheld = {config.token_env, config.http_pwd_env}
        self._withheld |= {r.token_env for r in config.all_remotes()}
        self._withheld |= {r.http_pwd_env for r in config.all_remotes()}
        self._secrets = {s for r in config.all_remotes()
                         for s in (r.resolved_token(), r.resolved_http_pwd()) if s}
        self._state_dir: Path | None = None
        self._process: anyio.abc.Process | None = None
        self._stopping = anyio.Event()
        self._finished = anyio.Event()
        self.restarts = 0

    # ------------------------------------------------------------------ the front's side

    def command(self) -> list[str]:
        assert self._state_dir is not None
        return [
            sys.executable, "-m", __name__,
            "--host", "127.0.0.1", "--port", str(self.port),
            # fps gives each module 1 s to prepare unless told otherwise: too short on a
            # loaded machine (fps-auth creates its database).
            "--timeout", "60",
            "--set", "auth.mode=token",
            "--set", f"auth.directory={self._state_dir / 'auth'}",
            # With this package loaded too (no url): kernel sockets authenticated at the
            # handshake only, which lifts fps-auth's limit of 15 open kernel sockets.
            *disabled_except(REMOTE_PLUGINS | {"remote_kernels"}),
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in self._withheld and v not in self._secrets
               and k not in (TOKEN_VARIABLE, STATE_VARIABLE)}
        env[TOKEN_VARIABLE] = self._token
        env[STATE_VARIABLE] = str(self._state_dir)
        return env

    async def run(self) -> None:
        """Start the child, and start it again whenever it exits, until `stop()`."""
        self._state_dir = Path(tempfile.mkdtemp(prefix=STATE_PREFIX))
        backoff = MIN_BACKOFF
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                code = await self._run_once()
                if self._stopping.is_set():
                    break
                if time.monotonic() - started >= STABLE_RUN:
                    backoff = MIN_BACKOFF
                logger.warning("Local kernel server exited; restarting it", name=self.name,
                               exit_code=code, restart_in=backoff)
                with anyio.move_on_after(backoff):
                    await self._stopping.wait()
                backoff = min(backoff * 2, MAX_BACKOFF)
                self.restarts += 1
        finally:
            # Cancelled (the front stopping without stop(), or stop() ran out of time): no
            # child may outlive the front.
            process = self._process
            if process is not None and process.returncode is None:
                _signal_group(process.pid, signal.SIGKILL)
            self._finished.set()

    async def _run_once(self) -> int | None:
        try:
            process = await anyio.open_process(
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, cwd=self.cwd, env=self.environment(),
                start_new_session=True)  # its own process group, with its kernels
        except OSError as e:
            logger.error("Local kernel server could not start", name=self.name, error=str(e))
            return None
        self._process = process
        if self._stopping.is_set():  # stop() came while it was being started
            _signal_group(process.pid, signal.SIGKILL)
        logger.info("Local kernel server started", name=self.name, pid=process.pid,
                    url=self.remote.url)
        relayed = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None
                tg.start_soon(self._relay_output, process.stdout, relayed)
                tg.start_soon(self._kill_unless_ready, process)
                code = await process.wait()
                # Its kernels share its stdout: the last lines (why it exited) are read once
                # they are gone too.
                _signal_group(process.pid, signal.SIGKILL)
                with anyio.move_on_after(1):
                    await relayed.wait()
                tg.cancel_scope.cancel()
        finally:
            # Its kernels are in its group: a child that died (SIGKILL, OOM) leaves them
            # running, and a new one must not find them in its way.
            _signal_group(process.pid, signal.SIGKILL)
            self._process = None
            # Its pipes, or each restart would leave two file descriptors open.
            with anyio.move_on_after(2, shield=True):
                await process.aclose()
        return code

    async def _relay_output(self, stream: anyio.abc.ByteReceiveStream,
                            relayed: anyio.Event) -> None:
        pending = b""
        try:
            async for chunk in stream:
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    self._log_line(line)
                if len(pending) > MAX_LINE:
                    self._log_line(pending)
                    pending = b""
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        if pending:
            self._log_line(pending)
        relayed.set()

    def _log_line(self, raw: bytes) -> None:
        text = _ANSI.sub("", raw[:MAX_LINE].decode(errors="replace")).rstrip()
        if not text:
            return
        text = text.replace(self._token, "[token]")
        for secret in self._secrets:
            text = text.replace(secret, "[token]")
        logger.info("Local kernel server", name=self.name, output=text)

    async def _kill_unless_ready(self, process: anyio.abc.Process) -> None:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < self.start_timeout:
                try:
                    # Any answer will do: it is up (the front's client logs in by itself).
                    await client.get(f"{self.remote.url}api/status")
                except httpx.TransportError:
                    await anyio.sleep(0.2)
                    continue
                logger.info("Local kernel server ready", name=self.name, pid=process.pid,
                            seconds=round(time.monotonic() - started, 2))
                return
        # A Jupyverse whose start failed (its port taken, say) logs it and hangs: kill it, and
        # the supervisor starts it again.
        logger.warning("Local kernel server did not answer in time: killing it", name=self.name,
                       pid=process.pid, seconds=self.start_timeout)
        _signal_group(process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop the child and its kernels: SIGTERM to its group, SIGKILL after STOP_GRACE."""
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            # Kernels that left its group (none do with fps-kernels today) are noted now.
            noted = descendants(process.pid)
            _signal_group(process.pid, signal.SIGTERM)
            try:
                with anyio.move_on_after(STOP_GRACE):
                    await process.wait()
            finally:
                _signal_group(process.pid, signal.SIGKILL)
                kill_survivors(noted)
            logger.info("Local kernel server stopped", name=self.name, pid=process.pid)
        with anyio.move_on_after(STOP_GRACE):
            await self._finished.wait()
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------- the child's side


def _end_group_when_front_goes(state_dir: str) -> None:
    """The front holds the other end of stdin: when it is gone (stopped, killed), remove the
    state directory the front would have removed, and end this process group, kernels
    included."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        if Path(state_dir).name.startswith(STATE_PREFIX):
            shutil.rmtree(state_dir, ignore_errors=True)
        # SIGTERM: Jupyverse stops (this package turns it into Ctrl-C), and so do the kernels.
        os.killpg(0, signal.SIGTERM)
        time.sleep(ORPHAN_STOP_GRACE)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="front-watch", daemon=True).start()


def child_main(args: list[str]) -> None:
    token = os.environ.pop(TOKEN_VARIABLE, "")
    if not token:
        sys.exit(f"{TOKEN_VARIABLE} is not set: this is started by fps-remote-kernels "
                 "(remote_kernels.local_kernels=true)")
    _end_group_when_front_goes(os.environ.pop(STATE_VARIABLE, ""))
    # A signal mask is inherited: a front started with SIGTERM blocked must not make its
    # kernel server deaf to the SIGTERM that stops it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    from jupyverse_api.cli import main

    # In this process's own arguments only: /proc/<pid>/cmdline shows the command it was
    # started with, which has no token.
    main.main(args=[*args, "--set", f"auth.token={token}"], prog_name="jupyverse")


if __name__ == "__main__":
    child_main(sys.argv[1:])
