"""Replay buffers: what a kernel sends while its client's connection blips is kept, bounded,
and replayed when the client comes back with the same session_id.

jupyter_server does this for its own kernels (`buffer_offline_messages`, unbounded); Jupyverse
does not at all. The front does it for every kind of remote: when a client goes away without a
close frame, its bridge keeps the upstream socket open for the grace period and buffers what
arrives on it. A client that reconnects with the same (kernel, session_id) claims that socket
and its buffer: the buffer is replayed in order, then the live stream follows, so nothing is
lost and nothing comes twice (the buffering stops before the new client reads the socket).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio
import structlog

from ..observers import ChannelsObserver, Frame
from ..remote.kernel_socket import UpstreamConnection

logger = structlog.get_logger()

# How long a reconnecting client waits for the away bridge to let go of the upstream socket
# (it only has to leave a recv(): immediate in practice).
_HANDOVER_SECONDS = 5.0
# Why buffers are dropped, by the start of the logged reason: the `cause` label of the metric.
_DROP_CAUSES = (("grace period", "grace_period"), ("buffer over", "overflow"),
                ("all buffers", "overflow"), ("remote socket closed", "remote_closed"),
                ("a newer socket", "superseded"))


@dataclass(frozen=True)
class ReplayLimits:
    grace_period: float
    session_bytes: int
    session_messages: int
    total_bytes: int


@dataclass(eq=False)
class AwaySession:
    """One upstream socket whose client is away, and what arrived on it since."""

    kernel_id: str
    session_id: str
    upstream: UpstreamConnection
    frames: deque[Frame] = field(default_factory=deque)
    size: int = 0
    claimed: bool = False
    dropped: bool = False
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    handed_over: anyio.Event = field(default_factory=anyio.Event)


class ReplayBuffers:
    """The away sessions of one front, with their shared byte limit."""

    def __init__(self, limits: ReplayLimits) -> None:
        self.limits = limits
        self._away: dict[tuple[str, str], AwaySession] = {}
        self.total_bytes = 0
        # Counted for the metrics: sessions and messages replayed, buffers dropped by cause.
        self.replayed_sessions = 0
        self.replayed_messages = 0
        self.drops: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.limits.grace_period > 0

    def __len__(self) -> int:
        return len(self._away)

    async def keep_while_away(self, away: AwaySession,
                              observe: tuple[ChannelsObserver, ...]) -> bool:
        """Buffer what `away.upstream` sends until a client claims it (True: the socket now
        belongs to that client), or the grace period ends, the buffer overflows or the
        upstream closes (False: the caller closes the socket; the buffer is dropped)."""
        key = (away.kernel_id, away.session_id)
        previous = self._away.pop(key, None)
        if previous is not None:
            self._drop(previous, "a newer socket of the same session went away")
        self._away[key] = away
        reason = "grace period ended"
        try:
            with away.scope, anyio.move_on_after(self.limits.grace_period):
                while True:
                    frame = await away.upstream.recv()
                    for observer in observe:
                        observer.from_kernel(away.kernel_id, frame)
                    overflow = self._append(away, frame)
                    if overflow:
                        reason = overflow
                        break
        except Exception as e:  # the upstream closed: the kernel or the remote went away
            reason = f"remote socket closed ({type(e).__name__})"
        finally:
            if self._away.get(key) is away:
                del self._away[key]
            if away.claimed:
                away.handed_over.set()
        if away.claimed:
            return True
        self._drop(away, reason)
        return False

    async def claim(self, kernel_id: str, session_id: str) -> AwaySession | None:
        """The away session of this (kernel, session_id), now the caller's.

        Other away sessions of the kernel keep their buffers. jupyter_server buffers one
        session per kernel and drops it when another connects; here two tabs or users of one
        kernel whose network drops together both get theirs back, and a reloaded tab's old
        session costs at most its bounds until the grace period ends."""
        away = self._away.pop((kernel_id, session_id), None)
        if away is None:
            return None
        away.claimed = True
        away.scope.cancel()
        with anyio.move_on_after(_HANDOVER_SECONDS):
            await away.handed_over.wait()
        if not away.handed_over.is_set():
            return None
        self.total_bytes -= away.size
        self.replayed_sessions += 1
        self.replayed_messages += len(away.frames)
        logger.info("Replaying what the kernel sent while the client was away",
                    kernel_id=kernel_id, messages=len(away.frames), bytes=away.size)
        return away

    def _append(self, away: AwaySession, frame: Frame) -> str | None:
        size = len(frame)
        limits = self.limits
        if away.size + size > limits.session_bytes:
            return f"buffer over {limits.session_bytes} bytes"
        if len(away.frames) >= limits.session_messages:
            return f"buffer over {limits.session_messages} messages"
        if self.total_bytes + size > limits.total_bytes:
            return f"all buffers together over {limits.total_bytes} bytes"
        away.frames.append(frame)
        away.size += size
        self.total_bytes += size
        return None

    def _drop(self, away: AwaySession, reason: str) -> None:
        if away.dropped:
            return
        away.dropped = True
        cause = next((c for prefix, c in _DROP_CAUSES if reason.startswith(prefix)), "other")
        self.drops[cause] = self.drops.get(cause, 0) + 1
        self.total_bytes -= away.size
        away.scope.cancel()
        logger.warning("Dropped the replay buffer of an away client", kernel_id=away.kernel_id,
                       messages=len(away.frames), bytes=away.size, reason=reason)
        away.frames.clear()
        away.size = 0
