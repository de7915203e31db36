"""Sessions: on the remote when there is a single remote whose session API is complete
(Jupyverse, jupyter_server); otherwise kept by the front itself, in the store, each naming
its kernel. As on jupyter_server, a session for an existing path is returned as is, and a
session whose kernel is gone is gone.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import RemoteKernelsError, not_found
from .remotes import gather
from .routing import KernelRouting
from .store import StoredSession


class Sessions(KernelRouting):
    async def sessions(self) -> list[dict[str, Any]]:
        on_remote = await self.remote_sessions()
        if on_remote is not None:
            return await on_remote.sessions()
        stored = self.store.sessions()
        kernels = await gather([self._session_kernel(s.kernel_id) for s in stored])
        return [_session_model(s, k) for s, k in zip(stored, kernels, strict=True)
                if k is not None]

    async def _session_kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """The kernel of a front-kept session; listed as unreachable if its remote does not
        answer (JupyterLab would drop a session missing from the list). A kernel gone from
        its remote (culled, crashed) is forgotten, with its sessions. Among several remotes,
        a sick one is not asked, and one is waited for at most `listing_timeout`."""
        remote = self.remotes.get(self.store.kernel_remote(kernel_id) or "")
        try:
            if remote is None or self.single is not None:
                model = await self.kernel(kernel_id)
            else:
                found = await self._bounded(remote, lambda _: self.kernel(kernel_id))
                if isinstance(found, RemoteKernelsError):
                    raise found
                model = found
        except RemoteKernelsError as e:
            if e.status == 404:
                self.store.forget_kernel(kernel_id)
                return None
            return await self._unreachable_kernel(kernel_id, e)
        # A kernel gone from its remote ends its sessions, as jupyter_server's session
        # manager drops a session whose kernel is gone (the kernel itself answers `dead`).
        return None if self.vanished.dead_model(kernel_id) is not None else model

    async def _unreachable_kernel(self, kernel_id: str, error: RemoteKernelsError
                                  ) -> dict[str, Any] | None:
        remote = self.remotes.get(self.store.kernel_remote(kernel_id) or "")
        if remote is None or error.status < 500:
            return None
        name = self.store.kernel_name(kernel_id)
        return self._unreachable_model(remote, kernel_id, name, error,
                                       await self._specs_or_none())

    async def session(self, session_id: str) -> dict[str, Any]:
        on_remote = await self.remote_sessions()
        if on_remote is not None:
            return await on_remote.session(session_id)
        stored = self.store.session(session_id)
        if stored is None:
            raise not_found(f"Session {session_id}")
        try:
            kernel = await self.kernel(stored.kernel_id)
        except RemoteKernelsError as e:
            if e.status == 404:
                raise not_found(f"Session {session_id}") from None
            unreachable = await self._unreachable_kernel(stored.kernel_id, e)
            if unreachable is None:
                raise
            kernel = unreachable
        return _session_model(stored, kernel)

    async def create_session(self, path: str, name: str, session_type: str,
                             kernel_name: str | None, kernel_id: str | None,
                             env: dict[str, str], username: str) -> dict[str, Any]:
        # As jupyter_server does: a session that exists for this path is returned as is.
        for session in await self.sessions():
            if session.get("path") == path:
                return session
        on_remote = await self.remote_sessions()
        if on_remote is not None:
            if kernel_id is not None:
                kernel = await on_remote.kernel(kernel_id)
                kernel_field: dict[str, Any] = {"id": kernel_id, "name": kernel.get("name")}
            else:
                kernel_field = {"name": (await self.resolve_spec(kernel_name))["remote_name"]}
            session = await on_remote.create_session(
                {"path": path, "name": name, "type": session_type, "kernel": kernel_field})
            if kernel_id is None:  # the remote started it for the front (culling applies)
                self._learn(session["kernel"]["id"], on_remote.name, started_by_front=True,
                            name=kernel_field["name"])
            return session
        if kernel_id is not None:
            kernel = await self.kernel(kernel_id)
        else:
            kernel = await self.start_kernel(kernel_name, _parent(path), env, username)
        stored = StoredSession(str(uuid.uuid4()), path, name, session_type, kernel["id"])
        self.store.add_session(stored)
        return _session_model(stored, kernel)

    async def update_session(self, session_id: str, changes: dict[str, Any],
                             kernel_name: str | None, kernel_id: str | None,
                             env: dict[str, str], username: str) -> dict[str, Any]:
        on_remote = await self.remote_sessions()
        if on_remote is not None:
            if kernel_id is not None:
                await on_remote.kernel(kernel_id)
                changes = {**changes, "kernel": {"id": kernel_id}}
            elif kernel_name is not None or "kernel" in changes:
                spec = await self.resolve_spec(kernel_name)
                changes = {**changes, "kernel": {"name": spec["remote_name"]}}
            updated = await on_remote.update_session(session_id, changes)
            new_kernel = updated.get("kernel")
            if kernel_id is None and "kernel" in changes and isinstance(new_kernel, dict):
                self._learn(str(new_kernel.get("id")), on_remote.name, started_by_front=True,
                            name=changes["kernel"]["name"])
            return updated
        stored = self.store.session(session_id)
        if stored is None:
            raise not_found(f"Session {session_id}")
        for key, value in changes.items():
            if key in ("path", "name", "type"):
                setattr(stored, key, value)
        old_kernel = stored.kernel_id
        if kernel_id is not None:
            kernel = await self.kernel(kernel_id)
            stored.kernel_id = kernel_id
        elif "kernel" in changes:
            kernel = await self.start_kernel(kernel_name, _parent(stored.path), env, username)
            stored.kernel_id = kernel["id"]
        else:
            kernel = None
        self.store.update_session(stored)
        if stored.kernel_id != old_kernel and not self.store.kernel_in_use(old_kernel):
            await self._shutdown_quietly(old_kernel)
        return _session_model(stored, kernel or await self.kernel(stored.kernel_id))

    async def delete_session(self, session_id: str) -> None:
        on_remote = await self.remote_sessions()
        if on_remote is not None:
            await on_remote.delete_session(session_id)
            return
        stored = self.store.session(session_id)
        if stored is None:
            raise not_found(f"Session {session_id}")
        self.store.delete_session(session_id)
        if not self.store.kernel_in_use(stored.kernel_id):
            await self._shutdown_quietly(stored.kernel_id)

    async def _shutdown_quietly(self, kernel_id: str) -> None:
        try:
            await self.shutdown_kernel(kernel_id)
        except RemoteKernelsError as e:
            if e.status != 404:
                raise
            self.store.forget_kernel(kernel_id)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _session_model(stored: StoredSession, kernel: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stored.id, "path": stored.path, "name": stored.name, "type": stored.type,
        "kernel": kernel, "notebook": {"path": stored.path, "name": stored.name},
    }
