"""Server-side execution on remote kernels: cells of the front's notebooks run without a browser.

JupyterLab's `@jupyter/docprovider-extension` cell executor (with `serverSideExecution`) POSTs
`/api/kernels/{id}/execute` with `{document_id, cell_id}` and reads only `response.ok`. The
front reads the cell from its own collaboration room, runs the code on the remote kernel over
one executor WebSocket per kernel (its own session id; replies matched by
`parent_header.msg_id`; other clients' traffic ignored) and writes the outputs into the Y cell
as JupyterLab does (outputs.py), so the room saves them to disk, browser or not.

- Once open, the socket asks `kernel_info` (again each second until answered), as JupyterLab
  does after connecting: a remote may drop what arrives while a restarted kernel connects.
- Cells are sent to the kernel as they are queued, in that order, with `stop_on_error` as
  JupyterLab sends them: after an error the kernel aborts the cells queued behind it (an
  aborted reply has no count). The route answers once the cell is queued ("Run all" POSTs every
  cell at once; requests held for a cell's length would stall the browser's connections).
- An execution ends when both its `execute_reply` and its iopub `idle` arrived (iopub and
  shell are separate channels: outputs may follow the reply, by seconds for a cell that
  printed megabytes); nothing sent before `idle` is dropped. Only a kernel that never sends
  `idle` is bounded: its execution ends once nothing came for it for a while after the reply.
- The receiving pump yields to the event loop after each frame, writes a long stream text in
  pieces (yielding between them) and reads a large message's content on a worker thread: a
  backlog of large outputs must not hold the front's other requests.
- A kernel process that dies while its cell runs: a Jupyverse remote neither says so nor
  closes the socket. While cells run the kernel is asked `kernel_info` on the control channel
  (answered by ipykernel even while busy) every few seconds; a kernel that answered such a
  probe during this run and then sends nothing at all for a while has died. Its running cell
  ends with an error output saying so, the queued ones without a count, and the next execute
  is answered 409 until the kernel is restarted (JupyterLab shows a dead kernel the same way).
- Queued and running cells per kernel are bounded (`execution_queue_limit`: 429 beyond).
- stdin is not offered (`allow_stdin: false`): `input()` fails at once instead of hanging.
- Restart or shutdown of the kernel, its socket closing (remote gone), the remote saying the
  kernel is gone or dead (asked every few seconds while cells run: a kernel culled on the
  remote leaves the socket open) and the front stopping end every pending execution: its
  cell goes idle without a count. After an interrupt the kernel answers the running cell
  (KeyboardInterrupt) and aborts the queued ones; whatever has not answered a few seconds
  later is ended the same way. Nothing stays `[*]`. The next execute opens a new socket.
- While any cell of a document is queued or runs, its room is held open (documents.py).
- The executor socket closes after a while with nothing to run: a Jupyverse remote keeps a
  database connection per open kernel socket.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import structlog

from ..api.service import KernelService
from ..errors import RemoteKernelsError, kernel_died, queue_full
from ..observers import ChannelsObserver, Frame
from ..relay.frames import V1_PROTOCOL, FrameError, legacy_message, message_frame, v1_parts
from ..remote.kernel_socket import ConnectionClosed, UpstreamConnection
from .documents import RoomHolds, find_cell, open_notebook
from .outputs import CellOutputs

logger = structlog.get_logger()


# After an execute_reply, how long nothing may come for the execution before it is taken to
# have ended without its iopub `idle`.
_QUIET_AFTER_REPLY_SECONDS = 30.0
# While cells run, the kernel is probed this often (kernel_info on the control channel, which
# ipykernel answers from its own thread while a cell runs), and taken as dead after this long
# silent. Long enough for a single C call that holds the GIL (nothing answers meanwhile):
# a shorter wait ends such a cell as dead while it still runs.
_PROBE_SECONDS = 2.0
_DEAD_SECONDS = 30.0
# Frames above this are parsed on a worker thread; stream text is written in pieces of this.
_LARGE_FRAME = 1 << 20
_WRITE_CHUNK = 1 << 18
# After an interrupt, how long the kernel has to answer the cells it was sent.
_INTERRUPT_GRACE_SECONDS = 5.0
# While cells run, how often the remote is asked whether the kernel still exists: a kernel
# culled or shut down on the remote leaves the socket open on every kind (measured).
_LIVENESS_SECONDS = 5.0
# An executor socket with nothing to run closes after this long.
_IDLE_CLOSE_SECONDS = 30.0
_CLOSE_SECONDS = 2.0
_OUTPUT_TYPES = frozenset(("stream", "display_data", "execute_result", "error", "clear_output",
                           "update_display_data"))
_USERNAME = "fps-remote-kernels"


@dataclass(eq=False)
class _Execution:
    """One cell queued or running on a kernel."""

    cell_id: str
    code: str
    outputs: CellOutputs
    release: Callable[[], None]  # of the room hold
    msg_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    replied: bool = False
    idle: bool = False
    heard: float = 0.0  # anyio.current_time() of its last message
    busy: bool = False  # the kernel started running it
    count: int | None = None
    broken: bool = False  # its cell can no longer be written (deleted, document reloaded)

    def write(self, msg_type: str, content: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self.outputs.handle(msg_type, content)
        except Exception as e:
            self.broken = True
            logger.info("A cell's outputs could no longer be written", cell_id=self.cell_id,
                        error=repr(e))

    def finish(self) -> None:
        try:
            if not self.broken:
                self.outputs.finish(self.count)
        except Exception as e:
            logger.info("A cell could not be marked idle", cell_id=self.cell_id, error=repr(e))
        finally:
            self.release()


class KernelExecutor:
    """The executor socket of one kernel, the cells queued on it and those it runs."""

    def __init__(self, kernel_id: str, open_socket: Callable[[str], Awaitable[UpstreamConnection]],
                 limit: int, observers: tuple[ChannelsObserver, ...] = (),
                 greet_timeout: float = 60.0,
                 kernel_model: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.kernel_id = kernel_id
        self._kernel_model = kernel_model
        self.greet_timeout = greet_timeout
        self._greetings: set[str] = set()
        self._greeted = anyio.Event()
        self.session_id = uuid.uuid4().hex
        self.limit = limit
        self.observers = observers
        self._open_socket = open_socket
        self.opened = anyio.Event()
        self.failure: RemoteKernelsError | None = None
        self.ended = False
        self._outbox: deque[_Execution] = deque()
        self._pending: dict[str, _Execution] = {}  # sent, not finished, in order
        self._wake = anyio.Event()
        self._scope = anyio.CancelScope()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._v1 = False
        self._reason = "closed"
        self._probes: set[str] = set()
        self._probe_answered = False  # a control probe answered while cells ran
        self._heard = 0.0  # anyio.current_time() of the kernel's last frame
        self.died = False
        self._probe_now = anyio.Event()

    def __len__(self) -> int:
        return len(self._outbox) + len(self._pending)

    def submit(self, execution: _Execution) -> None:
        """Queue a cell: it shows `[*]` with no outputs until it ends. 429 over the limit."""
        if len(self) >= self.limit:
            raise queue_full(self.kernel_id, self.limit)
        execution.outputs.start()
        self._outbox.append(execution)
        self._wake.set()

    def end(self, reason: str) -> None:
        """End the socket and every pending execution (restart, shutdown, front stopping)."""
        self.ended = True
        self._reason = reason
        self._scope.cancel()

    def interrupted(self) -> None:
        """The kernel was interrupted: cells not sent yet are dropped, and those sent that
        have not answered within the grace period are ended."""
        while self._outbox:
            self._outbox.popleft().finish()
        sent = list(self._pending.values())
        if sent and self._task_group is not None:
            self._task_group.start_soon(self._end_later, sent, _INTERRUPT_GRACE_SECONDS)

    async def run(self) -> None:
        try:
            with self._scope:
                try:
                    upstream = await self._open_socket(self.session_id)
                except RemoteKernelsError as e:
                    self.failure, self._reason = e, e.message
                    return
                self._v1 = upstream.subprotocol == V1_PROTOCOL
                try:
                    async with anyio.create_task_group() as tg:
                        self._task_group = tg
                        tg.start_soon(self._receive, upstream, tg.cancel_scope)
                        if not await self._greet(upstream):
                            tg.cancel_scope.cancel()
                            return
                        logger.info("Executor socket opened", kernel_id=self.kernel_id,
                                    subprotocol=upstream.subprotocol or "legacy")
                        self.opened.set()
                        tg.start_soon(self._send, upstream, tg.cancel_scope)
                        tg.start_soon(self._watch_kernel, tg.cancel_scope)
                        tg.start_soon(self._probe, upstream, tg.cancel_scope)
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_SECONDS):
                        await upstream.close()
        finally:
            self.ended = True
            self.opened.set()
            self._end_all()
            logger.info("Executor socket closed", kernel_id=self.kernel_id, reason=self._reason)

    async def _greet(self, upstream: UpstreamConnection) -> bool:
        """Whether the kernel answered a `kernel_info_request`, as JupyterLab asks after each
        connection before anything else: a remote may drop what is sent while a (re)started
        kernel's channels connect (seen on Kernel Gateway), so it is asked again each second."""
        with anyio.move_on_after(self.greet_timeout):
            while not self._greeted.is_set():
                msg_id = uuid.uuid4().hex
                self._greetings.add(msg_id)
                try:
                    await upstream.send(self._message("kernel_info_request", msg_id, {}))
                except ConnectionClosed:
                    return False
                with anyio.move_on_after(1):
                    await self._greeted.wait()
            return True
        self.failure = RemoteKernelsError(
            504, f"Kernel {self.kernel_id} did not answer within {self.greet_timeout:g} s",
            "Gateway Timeout")
        self._reason = self.failure.message
        return False

    async def _watch_kernel(self, scope: anyio.CancelScope) -> None:
        """End everything when the remote says the kernel is gone or dead (asked only while
        cells run); an unreachable remote is left to the socket's keepalive pings."""
        if self._kernel_model is None:
            return
        while True:
            await anyio.sleep(_LIVENESS_SECONDS)
            if not self._pending:
                continue
            try:
                model = await self._kernel_model()
            except RemoteKernelsError as e:
                if e.status != 404:
                    continue
                self._reason = "the kernel is gone from the remote"
            else:
                if model.get("execution_state") != "dead":
                    continue
                self._reason = "the kernel is dead"
            self.ended = True
            scope.cancel()
            return

    async def _probe(self, upstream: UpstreamConnection, scope: anyio.CancelScope) -> None:
        """Declare the kernel dead when, while cells run, it stops answering control probes
        after it answered one while running a cell (a kernel that does not answer the control
        channel while busy is left to the other checks)."""
        while True:
            self._probe_now = anyio.Event()
            if not self._pending:
                self._probe_answered = False
                self._probes.clear()
            else:
                if (self._probe_answered
                        and anyio.current_time() - self._heard > _DEAD_SECONDS):
                    self._died()
                    scope.cancel()
                    return
                msg_id = uuid.uuid4().hex
                self._probes.add(msg_id)
                try:
                    await upstream.send(self._message("kernel_info_request", msg_id, {},
                                                      channel="control"))
                except ConnectionClosed:
                    return
            with anyio.move_on_after(_PROBE_SECONDS):
                await self._probe_now.wait()

    def _died(self) -> None:
        """The running cell gets an error saying the kernel died; the rest end with it."""
        self.died, self.ended = True, True
        self._reason = "the kernel died"
        running = next(iter(self._pending.values()), None)
        if running is not None:
            running.write("error", {
                "ename": "DeadKernelError",
                "evalue": f"The kernel died while this cell ran (it answered nothing for "
                          f"{_DEAD_SECONDS:g} s); restart it to run cells again",
                "traceback": []})
        logger.warning("Kernel died while cells ran", kernel_id=self.kernel_id)

    def _end_all(self) -> None:
        executions = [*self._pending.values(), *self._outbox]
        self._pending.clear()
        self._outbox.clear()
        for execution in executions:
            execution.count = None
            execution.finish()
        if executions:
            logger.info("Pending executions ended", kernel_id=self.kernel_id,
                        count=len(executions), reason=self._reason)

    async def _send(self, upstream: UpstreamConnection, scope: anyio.CancelScope) -> None:
        try:
            while True:
                self._wake = anyio.Event()
                while self._outbox:
                    execution = self._outbox.popleft()
                    self._pending[execution.msg_id] = execution
                    await upstream.send(self._request(execution))
                if self._pending:
                    await self._wake.wait()
                    continue
                with anyio.move_on_after(_IDLE_CLOSE_SECONDS):
                    await self._wake.wait()
                if not self._outbox and not self._pending:
                    self.ended, self._reason = True, "nothing to run"
                    return
        except ConnectionClosed:
            pass  # the receiving side says why
        finally:
            scope.cancel()

    async def _receive(self, upstream: UpstreamConnection, scope: anyio.CancelScope) -> None:
        observers, kernel_id = self.observers, self.kernel_id
        try:
            while True:
                frame = await upstream.recv()
                self._heard = anyio.current_time()
                try:
                    probe = await self._dispatch(len(frame), *self._parse(frame))
                except (FrameError, ValueError, RecursionError, UnicodeDecodeError) as e:
                    probe = False
                    logger.warning("The remote sent a malformed frame to the executor",
                                   kernel_id=kernel_id, problem=str(e))
                if not probe:  # a probe's idle would show a busy kernel idle
                    for observer in observers:  # the kernel's activity, as for relayed sockets
                        observer.from_kernel(kernel_id, frame)
                await anyio.lowlevel.checkpoint()
        except ConnectionClosed as e:
            received = e.received
            self._reason = (f"remote closed it ({received.code} {received.reason})".strip()
                            if received else "connection lost")
        finally:
            self.ended = True
            scope.cancel()

    def _parse(self, frame: Frame) -> tuple[str, Any, Any, Callable[[], Any]]:
        """A frame's channel, header, parent header and (read when asked) content."""
        content_of: Callable[[], Any]
        if self._v1 and isinstance(frame, bytes):
            parts = v1_parts(frame)
            channel = parts[0].decode()
            header, parent = json.loads(parts[1] or b"{}"), json.loads(parts[2] or b"{}")
            raw = parts[4]

            def content_of() -> Any:
                return json.loads(raw or b"{}")
        else:
            message = legacy_message(frame)
            channel = message.get("channel") or ""
            header, parent = message.get("header") or {}, message.get("parent_header") or {}

            def content_of() -> Any:
                return message.get("content")
        return channel, header, parent, content_of

    async def _dispatch(self, size: int, channel: str, header: Any, parent: Any,
                        content_of: Callable[[], Any]) -> bool:
        """Handle one message from the kernel; whether it was about a liveness probe."""
        if not isinstance(header, dict) or not isinstance(parent, dict):
            return False
        msg_type = header.get("msg_type")
        parent_id = parent.get("msg_id")
        if parent_id in self._probes:
            if msg_type == "kernel_info_reply":
                self._probes.discard(parent_id)
                running = next(iter(self._pending.values()), None)
                if running is not None and running.busy and not running.idle:
                    self._probe_answered = True
            return True
        if channel == "iopub" and msg_type == "status":
            self._status(parent_id, content_of())
            return False
        if msg_type == "kernel_info_reply" and parent_id in self._greetings:
            self._greeted.set()
            return False
        execution = self._pending.get(parent_id)  # type: ignore[arg-type]
        if execution is None:
            return False  # another client's, or one that was ended
        execution.heard = anyio.current_time()
        if msg_type in _OUTPUT_TYPES and execution.outputs.truncated:
            return False  # over the cell's bound: not even read
        if msg_type not in _OUTPUT_TYPES and msg_type != "execute_reply":
            content: Any = {}
        elif size > _LARGE_FRAME:  # read on a worker thread: the loop keeps serving
            content = await anyio.to_thread.run_sync(content_of)
        else:
            content = content_of()
        if not isinstance(content, dict):
            return False
        if channel == "iopub" and msg_type in _OUTPUT_TYPES:
            await self._write(execution, str(msg_type), content)
        elif channel == "shell" and msg_type == "execute_reply":
            count = content.get("execution_count")
            aborted = content.get("status") == "aborted"
            execution.count = count if isinstance(count, int) and not aborted else None
            execution.replied = True
            if execution.idle:
                self._finish(execution)
            elif self._task_group is not None:
                self._task_group.start_soon(self._end_when_quiet, execution)
        return False

    async def _write(self, execution: _Execution, msg_type: str,
                     content: dict[str, Any]) -> None:
        """Write an output; a long text in pieces, yielding to the loop between them (the
        result is the same: only the last line is ever rewritten)."""
        text = content.get("text") if msg_type == "stream" else None
        if not isinstance(text, str) or len(text) <= _WRITE_CHUNK:
            execution.write(msg_type, content)
            return
        for start in range(0, len(text), _WRITE_CHUNK):
            if self._pending.get(execution.msg_id) is not execution:
                return  # ended meanwhile (restart, the kernel died)
            execution.write(msg_type, {**content, "text": text[start:start + _WRITE_CHUNK]})
            await anyio.lowlevel.checkpoint()

    def _status(self, msg_id: Any, content: Any) -> None:
        state = content.get("execution_state") if isinstance(content, dict) else None
        if state in ("restarting", "dead") or (state == "starting" and not msg_id):
            # The kernel process was replaced or died: nothing sent to it will answer.
            for pending in list(self._pending.values()):
                self._finish(pending)
            return
        execution = self._pending.get(msg_id) if isinstance(msg_id, str) else None
        if execution is not None and state == "busy":
            execution.busy = True
            self._probe_now.set()  # whether the kernel answers probes while it runs a cell
        elif execution is not None and state == "idle":
            execution.idle = True
            if execution.replied:
                self._finish(execution)

    def _finish(self, execution: _Execution) -> None:
        if self._pending.pop(execution.msg_id, None) is execution:
            execution.finish()

    async def _end_when_quiet(self, execution: _Execution) -> None:
        """End a replied execution whose `idle` never came, once nothing came for it."""
        while execution.msg_id in self._pending:
            quiet = anyio.current_time() - execution.heard
            if quiet >= _QUIET_AFTER_REPLY_SECONDS:
                self._finish(execution)
                return
            await anyio.sleep(_QUIET_AFTER_REPLY_SECONDS - quiet)

    async def _end_later(self, executions: list[_Execution], seconds: float) -> None:
        await anyio.sleep(seconds)
        for execution in executions:
            self._finish(execution)

    def _request(self, execution: _Execution) -> Frame:
        return self._message("execute_request", execution.msg_id, {
            "code": execution.code, "silent": False, "store_history": True,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
        }, {"cellId": execution.cell_id})

    def _message(self, msg_type: str, msg_id: str, content: dict[str, Any],
                 metadata: dict[str, Any] | None = None, channel: str = "shell") -> Frame:
        return message_frame({
            "channel": channel,
            "header": {
                "msg_id": msg_id, "msg_type": msg_type, "session": self.session_id,
                "username": _USERNAME, "version": "5.3",
                "date": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            },
            "parent_header": {},
            "metadata": metadata or {},
            "content": content,
        }, self._v1)


class Executions:
    """Server-side execution for one front: an executor per kernel, the rooms held meanwhile.

    `yjs` is fps-yjs' `Yjs` and `file_id` fps-file-id's `FileId`."""

    def __init__(self, service: KernelService, yjs: Any, file_id: Any, limit: int,
                 observers: Callable[[], tuple[ChannelsObserver, ...]] = tuple,
                 open_timeout: float = 60.0, output_limit: int | None = None) -> None:
        self.service = service
        self.output_limit = output_limit
        self.died: set[str] = set()  # kernels that died under a cell, until restarted
        self.yjs = yjs
        self.file_id = file_id
        self.limit = limit
        self.observers = observers
        self.open_timeout = open_timeout
        self.executors: dict[str, KernelExecutor] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._holds: RoomHolds | None = None
        self._ready = anyio.Event()

    async def run(self) -> None:
        """Serve until cancelled (the front stopping): then every pending cell goes idle."""
        try:
            async with anyio.create_task_group() as tg:
                self._task_group, self._holds = tg, RoomHolds(tg)
                self._ready.set()
                await anyio.sleep_forever()
        finally:
            # Cancelled with the task group: each executor ends its cells as it goes.
            for executor in list(self.executors.values()):
                executor.end("the front is stopping")

    async def execute(self, kernel_id: str, document_id: str, cell_id: str) -> bool:
        """Queue the cell on the kernel (False: not a code cell, nothing runs)."""
        with anyio.fail_after(10):
            await self._ready.wait()
        if kernel_id in self.died:
            raise kernel_died(kernel_id)
        assert self._holds is not None
        room = await open_notebook(self.yjs, self.file_id, document_id)
        release = await self._holds.hold(room)
        try:
            ycell = find_cell(room, cell_id)
            if ycell.get("cell_type") != "code":
                return False
            code = str(ycell.get("source") or "")
            executor = await self._executor(kernel_id)
            # No await from here on: cells are queued in the order their requests got here.
            executor.submit(_Execution(cell_id, code, CellOutputs(ycell, self.output_limit),
                                       release))
        except BaseException:
            release()
            raise
        logger.debug("Cell queued", kernel_id=kernel_id, cell_id=cell_id, queued=len(executor))
        return True

    def kernel_gone(self, kernel_id: str) -> None:
        """The kernel was shut down through the front."""
        self._end(kernel_id, "kernel shut down")

    def kernel_restarted(self, kernel_id: str) -> None:
        self._end(kernel_id, "kernel restarted")

    def kernel_interrupted(self, kernel_id: str) -> None:
        executor = self.executors.get(kernel_id)
        if executor is not None and not executor.ended:
            executor.interrupted()

    def _end(self, kernel_id: str, reason: str) -> None:
        self.died.discard(kernel_id)
        executor = self.executors.pop(kernel_id, None)
        if executor is not None:
            executor.end(reason)

    async def _executor(self, kernel_id: str) -> KernelExecutor:
        """The kernel's open executor; opened (after checking the kernel exists: 404) if none."""
        executor = self.executors.get(kernel_id)
        if executor is None or executor.ended:
            assert self._task_group is not None
            executor = KernelExecutor(kernel_id, self._opener(kernel_id), self.limit,
                                      self.observers(), self.open_timeout,
                                      partial(self.service.kernel, kernel_id))
            self.executors[kernel_id] = executor
            self._task_group.start_soon(self._run, executor)
        with anyio.move_on_after(2 * self.open_timeout):
            await executor.opened.wait()
        if executor.failure is not None:
            raise executor.failure
        if not executor.opened.is_set() or executor.ended:
            raise RemoteKernelsError(503, f"Could not open a connection to kernel {kernel_id} "
                                     "for server-side execution", "Service Unavailable")
        return executor

    async def _run(self, executor: KernelExecutor) -> None:
        try:
            await executor.run()
        finally:
            if executor.died:
                self.died.add(executor.kernel_id)
            if self.executors.get(executor.kernel_id) is executor:
                del self.executors[executor.kernel_id]

    def _opener(self, kernel_id: str) -> Callable[[str], Awaitable[UpstreamConnection]]:
        async def open_socket(session_id: str) -> UpstreamConnection:
            # A Jupyverse remote accepts a socket for an unknown kernel and then says nothing.
            await self.service.kernel(kernel_id)
            remote = await self.service.owner(kernel_id)
            return await remote.client.connect_channels(kernel_id, session_id, [V1_PROTOCOL])

        return open_socket
