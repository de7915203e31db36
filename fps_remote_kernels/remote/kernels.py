"""The remote's kernels, kernelspecs and sessions, answered with jupyter_server's contract.

A Jupyverse remote differs from jupyter_server (measured, see shared/PROTOCOL.md): `200 null`
for unknown kernels, 200 for interrupt, no `POST /api/kernels`, no `GET /api/sessions/{id}`,
500 when deleting an unknown session. This layer hides those differences from the routes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from ..activity import Activity
from ..errors import bad_gateway, not_found
from .cache import CoalescingCache
from .kinds import Kind
from .rest_client import RemoteClient
from .working_dirs import kernel_working_dir, relative_dir

logger = structlog.get_logger()

# Sessions the front creates on a Jupyverse remote only to start a bare kernel
# (POST /api/kernels); they are hidden from the session list.
KERNEL_ONLY_SESSION_TYPE = "x-remote-kernels-kernel-only"
_SESSION_FIELDS = ("id", "path", "name", "type", "kernel")
_MAX_USER_CACHES = 1000


class RemoteKernels:
    def __init__(self, client: RemoteClient, kernelspecs_cache_ttl: float,
                 activity: Activity | None = None) -> None:
        self.client = client
        # What the front saw of each kernel's traffic, merged into the models it answers.
        self.activity = activity or Activity()
        self.name = client.remote.name
        self._kernelspecs: CoalescingCache[dict[str, Any]] = CoalescingCache(
            kernelspecs_cache_ttl
        )
        # Told of each kernel start asked of this remote: (remote name, whether it worked).
        self.on_kernel_start: Callable[[str, bool], None] | None = None
        # Enterprise Gateway lists kernelspecs per user: one short-lived answer per user.
        self._kernelspecs_of_user: dict[str, CoalescingCache[dict[str, Any]]] = {}

    async def kind(self) -> Kind:
        return await self.client.ensure_kind()

    @property
    def kind_name(self) -> str:
        return self.client.kind.name if self.client.kind is not None else "auto"

    @property
    def start_timeout(self) -> float:
        return self.client.config.kernel_start_timeout

    # ---------------------------------------------------------------- kernelspecs

    async def kernelspecs(self, user: str | None = None) -> dict[str, Any]:
        """The remote's kernelspecs; those `user` may start, if the remote filters per user."""
        if user is None or not (await self.kind()).kernelspecs_per_user:
            return await self._kernelspecs.get(self._fetch_kernelspecs)
        cache = self._kernelspecs_of_user.get(user)
        if cache is None:
            if len(self._kernelspecs_of_user) >= _MAX_USER_CACHES:
                self._kernelspecs_of_user.pop(next(iter(self._kernelspecs_of_user)))
            cache = self._kernelspecs_of_user[user] = CoalescingCache(self._kernelspecs.ttl)
        return await cache.get(lambda: self._fetch_kernelspecs(user))

    def cached_kernelspecs(self, user: str | None = None) -> dict[str, Any] | None:
        """The kernelspecs last fetched, if still fresh; None otherwise (nothing is asked)."""
        kind = self.client.kind
        if user is None or (kind is not None and not kind.kernelspecs_per_user):
            return self._kernelspecs.fresh()
        cache = self._kernelspecs_of_user.get(user)
        return cache.fresh() if cache is not None else None

    async def _fetch_kernelspecs(self, user: str | None = None) -> dict[str, Any]:
        path = f"api/kernelspecs?user={quote(user, safe='')}" if user else "api/kernelspecs"
        specs = await self.client.get_json(path)
        if not isinstance(specs, dict) or not isinstance(specs.get("kernelspecs"), dict):
            raise bad_gateway(self.client.name, "kernelspecs answer is not a kernelspecs model")
        return specs

    async def kernelspec_file(self, name: str, file_name: str) -> tuple[bytes, str | None]:
        response = await self.client.request(
            "GET", f"kernelspecs/{quote(name, safe='')}/{quote(file_name, safe='')}"
        )
        if response.status_code != 200:
            raise self.client.error_from(response)
        return response.content, response.headers.get("content-type")

    # ---------------------------------------------------------------- kernels

    async def kernels(self) -> list[dict[str, Any]] | None:
        """The remote's kernels; None if it does not list them (a gateway, by default)."""
        response = await self.client.request("GET", "api/kernels")
        if response.status_code == 403 and not (await self.kind()).remote_sessions:
            return None
        kernels = self.client.json_of(response)
        if not isinstance(kernels, list):
            raise bad_gateway(self.client.name, "kernels answer is not a list")
        return [self.activity.merge(k) if isinstance(k, dict) else k for k in kernels]

    async def check_before_socket(self, kernel_id: str) -> bool:
        """Whether a kernel socket to `kernel_id` must first ask the remote that the kernel
        exists: not when the remote's handshake says so itself, nor for a kernel the front
        heard from a moment ago (the check costs the remote as much as the handshake)."""
        if (await self.kind()).handshake_checks_kernel:
            return False
        return not self.activity.seen_alive(kernel_id)

    async def kernel(self, kernel_id: str) -> dict[str, Any]:
        model = await self.client.get_json(_kernel_path(kernel_id))
        return self.activity.merge(_kernel_or_404(model, kernel_id, self.client.name))

    async def start_kernel(self, name: str, path: str | None, env: dict[str, str]
                           ) -> dict[str, Any]:
        kind = await self.kind()
        path = relative_dir(path)
        if kind.post_kernels:
            body: dict[str, Any] = {"name": name}
            if path:
                body["path"] = path
            if kind.kernel_env:
                if kind.launch_timeout_env:
                    env = {"KERNEL_LAUNCH_TIMEOUT": str(int(self.start_timeout)), **env}
                root = self.client.remote.kernel_working_dir_root
                if root is not None and "KERNEL_WORKING_DIR" not in env:
                    # As GatewayClient: a KERNEL_WORKING_DIR the client sent wins.
                    env = {**env, "KERNEL_WORKING_DIR": kernel_working_dir(root, path)}
                body["env"] = env
            with self._counted_start():
                response = await self.client.request("POST", "api/kernels", json=body,
                                                     timeout=self.start_timeout)
                return _kernel_or_404(self.client.json_of(response, expected=(200, 201)),
                                      "new kernel", self.client.name)
        # A Jupyverse remote starts kernels only for sessions: start one through a session
        # that the front hides. Its path's parent is the kernel's working directory.
        marker = f".remote-kernel-{uuid.uuid4()}"
        session_path = f"{path.rstrip('/')}/{marker}" if path else marker
        session = await self.create_session(
            {"path": session_path, "name": "", "type": KERNEL_ONLY_SESSION_TYPE,
             "kernel": {"name": name}}
        )
        return session["kernel"]

    async def shutdown_kernel(self, kernel_id: str) -> None:
        await self.kernel(kernel_id)  # a Jupyverse remote answers 204 for unknown ids
        response = await self.client.request("DELETE", _kernel_path(kernel_id))
        if response.status_code not in (200, 204):
            raise self.client.error_from(response)

    async def interrupt_kernel(self, kernel_id: str) -> None:
        response = await self.client.request("POST", _kernel_path(kernel_id, "interrupt"))
        if response.status_code == 204:
            return
        await self._404_if_gone(response, kernel_id)
        _kernel_or_404(self.client.json_of(response), kernel_id, self.client.name)

    async def restart_kernel(self, kernel_id: str) -> dict[str, Any]:
        response = await self.client.request(
            "POST", _kernel_path(kernel_id, "restart"), timeout=self.start_timeout
        )
        await self._404_if_gone(response, kernel_id)
        return self.activity.merge(
            _kernel_or_404(self.client.json_of(response), kernel_id, self.client.name))

    async def _404_if_gone(self, response: httpx.Response, kernel_id: str) -> None:
        # jupyter_server answers 500 to actions on an unknown kernel: say 404 if it is gone.
        if response.status_code >= 500:
            await self.kernel(kernel_id)

    # ---------------------------------------------------------------- sessions

    async def sessions(self) -> list[dict[str, Any]]:
        sessions = await self.client.get_json("api/sessions")
        if not isinstance(sessions, list):
            raise bad_gateway(self.client.name, "sessions answer is not a list")
        return [
            self._merged(_session_model(s)) for s in sessions
            if isinstance(s, dict) and s.get("type") != KERNEL_ONLY_SESSION_TYPE
        ]

    def _merged(self, session: dict[str, Any]) -> dict[str, Any]:
        kernel = session.get("kernel")
        if isinstance(kernel, dict):
            session["kernel"] = self.activity.merge(kernel)
        return session

    async def session(self, session_id: str) -> dict[str, Any]:
        for session in await self.sessions():
            if session.get("id") == session_id:
                return session
        raise not_found(f"Session {session_id}")

    async def create_session(self, model: dict[str, Any]) -> dict[str, Any]:
        starts_kernel = "id" not in (model.get("kernel") or {})
        with self._counted_start() if starts_kernel else nullcontext():
            response = await self.client.request(
                "POST", "api/sessions", json=model, timeout=self.start_timeout
            )
            session = self.client.json_of(response, expected=(200, 201))
            if not isinstance(session, dict) or not isinstance(session.get("kernel"), dict):
                raise bad_gateway(self.client.name, "session answer is not a session model")
        return _session_model(session)

    @contextmanager
    def _counted_start(self) -> Iterator[None]:
        """Tell `on_kernel_start` (the metrics) whether the kernel start inside worked."""
        try:
            yield
        except Exception:  # a cancelled start (the client left) is not a failed one
            if self.on_kernel_start is not None:
                self.on_kernel_start(self.name, False)
            raise
        if self.on_kernel_start is not None:
            self.on_kernel_start(self.name, True)

    async def update_session(self, session_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        await self.session(session_id)  # a Jupyverse remote answers 500 for unknown ids
        timeout = self.start_timeout if "kernel" in changes else None
        response = await self.client.request(
            "PATCH", _session_path(session_id), json={**changes, "id": session_id},
            timeout=timeout,
        )
        session = self.client.json_of(response)
        if not isinstance(session, dict):
            raise bad_gateway(self.client.name, "session answer is not a session model")
        return self._merged(_session_model(session))

    async def delete_session(self, session_id: str) -> None:
        await self.session(session_id)  # a Jupyverse remote answers 500 for unknown ids
        response = await self.client.request("DELETE", _session_path(session_id))
        if response.status_code not in (200, 204):
            raise self.client.error_from(response)

    # ---------------------------------------------------------------- status

    async def status(self) -> dict[str, Any]:
        kind = await self.kind()
        return await self.client.get_json(kind.status_path,
                                          timeout=self.client.config.connect_timeout)


def _kernel_path(kernel_id: str, action: str | None = None) -> str:
    path = f"api/kernels/{quote(kernel_id, safe='')}"
    return f"{path}/{action}" if action else path


def _session_path(session_id: str) -> str:
    return f"api/sessions/{quote(session_id, safe='')}"


def _kernel_or_404(model: Any, kernel_id: str, remote: str) -> dict[str, Any]:
    if model is None:
        raise not_found(f"Kernel {kernel_id}")
    if not isinstance(model, dict) or not isinstance(model.get("id"), str):
        raise bad_gateway(remote, "it answered an invalid kernel model")
    return model


def _session_model(session: dict[str, Any]) -> dict[str, Any]:
    # Jupyverse does not update `notebook` when a session is renamed or moved.
    model = {key: session.get(key) for key in _SESSION_FIELDS}
    model["notebook"] = {"path": model["path"], "name": model["name"]}
    return model
