"""What the bridge tells the capabilities that watch kernel traffic (activity, metrics, ...).

The bridge stays a relay: it hands each frame it moves to the observers registered with the
routes, and they read what they need. Observers run on the hot path of every frame, inline and
synchronously: they must not block or await, and should read as little of a frame as they can
(see relay/frames.py for cheap peeks). A frame is given as the remote sent it (v1 bytes, or legacy
text/bytes when the remote speaks legacy), before any translation for the client.
"""

from __future__ import annotations

from typing import Protocol

Frame = str | bytes


class ChannelsObserver(Protocol):
    def opened(self, kernel_id: str, session_id: str) -> None:
        """A client kernel socket was joined to an upstream socket."""

    def closed(self, kernel_id: str, session_id: str) -> None:
        """That client socket ended (whatever happens to its upstream socket)."""

    def from_kernel(self, kernel_id: str, frame: Frame) -> None:
        """A frame the remote sent for this kernel (relayed, or buffered for replay)."""

    def to_kernel(self, kernel_id: str, frame: Frame) -> None:
        """A frame a client sent to this kernel, as sent upstream."""


class Observers:
    """The observers of one front; empty by default (then the bridge skips them entirely)."""

    def __init__(self) -> None:
        self.all: tuple[ChannelsObserver, ...] = ()

    def add(self, observer: ChannelsObserver) -> None:
        self.all = (*self.all, observer)
