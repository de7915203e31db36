"""Kernels that vanished from their remote (it restarted, culled or lost them): answered as
dead, the way JupyterLab learns that a kernel is gone.

When a kernel socket closes early, JupyterLab (@jupyterlab/services 7) asks
`GET /api/kernels/{id}`: a model whose `execution_state` is `dead` ends the kernel on the page
(its pending cells end, the notebook offers to pick a kernel); a 404 reads as "reconnect",
seven times, and leaves the notebook "Disconnected" with its cell `[*]`. jupyter_server tells
its clients the same on a kernel it could not restart (an iopub `status: dead`). So the front
remembers, for a while and a bounded number of them, the kernels it knew that their remote no
longer has, and answers those as dead until a client deletes them. A kernel a user shut down
is not one of them: it is 404, as on jupyter_server.
"""

from __future__ import annotations

import time
from typing import Any

from ..activity import format_time

# How long and how many vanished kernels are remembered: far longer than a reconnecting
# client takes to ask, and bounded.
KEEP_SECONDS = 3600.0
MAX_KEPT = 10_000


class VanishedKernels:
    def __init__(self) -> None:
        # kernel id -> (kernelspec name as the front names it, when it vanished: time.time())
        self._kept: dict[str, tuple[str, float]] = {}

    def add(self, kernel_id: str, name: str) -> None:
        now = time.time()
        if len(self._kept) >= MAX_KEPT:
            self._kept = {k: v for k, v in self._kept.items() if now - v[1] < KEEP_SECONDS}
            while len(self._kept) >= MAX_KEPT:
                self._kept.pop(next(iter(self._kept)))
        self._kept[kernel_id] = (name, now)

    def dead_model(self, kernel_id: str) -> dict[str, Any] | None:
        """The model of a vanished kernel (state `dead`), None if it did not vanish lately."""
        kept = self._kept.get(kernel_id)
        if kept is None or time.time() - kept[1] >= KEEP_SECONDS:
            return None
        name, when = kept
        return {"id": kernel_id, "name": name, "last_activity": format_time(when),
                "execution_state": "dead", "connections": 0}

    def discard(self, kernel_id: str) -> bool:
        """Forget a vanished kernel (a client deleted it); whether it was one."""
        return self._kept.pop(kernel_id, None) is not None
