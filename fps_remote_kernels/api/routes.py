"""The Jupyverse kernels router, every route served from the remote.

Each route validates what the client sent, delegates to `KernelService`, and answers with
jupyter_server's status codes (which JupyterLab checks).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from jupyverse_api import App
from jupyverse_auth import Auth, User
from jupyverse_kernels import Kernels

from ..errors import (
    RemoteKernelsError,
    as_unavailable,
    bad_request,
    execution_unavailable,
)
from ..execution.executor import Executions
from ..host.auth_cache import AuthCache
from ..host.handshake_auth import authorize_at_handshake_only
from ..observers import Observers
from ..relay.bridge import KernelChannelsBridge, deny
from ..relay.replay import ReplayBuffers
from .checks import (
    check_env,
    checked_kernel_id,
    checked_name,
    checked_path,
    checked_session_id,
    is_name,
    json_object,
    kernel_request,
    optional_str,
    origin_allowed,
    refuse_origin,
    required_str,
)
from .service import KernelService

logger = structlog.get_logger()

P = ParamSpec("P")
R = TypeVar("R")

def answers_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, Any]]:
    """Turn a RemoteKernelsError raised by a route into its JSON answer."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        try:
            return await method(*args, **kwargs)
        except RemoteKernelsError as e:
            if e.status in (502, 503, 504):
                # The remote failed the request: operators see it in the front's log too.
                logger.warning("Remote request failed", route=method.__name__,
                               status=e.status, message=e.message)
            return e.response()

    return wrapper


class _RemoteKernels(Kernels):
    def __init__(
        self,
        app: App,
        auth: Auth,
        service: KernelService,
        base_url: str,
        allowed_origins: list[str],
        kernel_username: Callable[[User], str],
        shutdown_kernels_on_stop: bool = False,
        replay: ReplayBuffers | None = None,
        auth_cache: AuthCache | None = None,
    ) -> None:
        self._auth = auth
        self.auth_cache = auth_cache
        self.service = service
        self.base_url = base_url
        self.allowed_origins = allowed_origins
        self.kernel_username = kernel_username
        self.shutdown_kernels_on_stop = shutdown_kernels_on_stop
        self.replay = replay
        self._app_ref = app
        self._bridges: set[KernelChannelsBridge] = set()
        # The open bridge of each (kernel, session_id): a newer one replaces it.
        self._live: dict[tuple[str, str], KernelChannelsBridge] = {}
        # Capabilities that watch kernel traffic register here (activity, metrics, ...).
        self.observers = Observers()
        self.process_facts: dict[str, Any] = {}
        # Server-side execution, set by the module when the collaboration plugins are there.
        self.executions: Executions | None = None
        super().__init__(app=app, auth=auth)

    def include_router(self, router: APIRouter, **kwargs: Any) -> None:
        # The Kernels ABC lacks three routes of jupyter_server's API. They go on the same
        # router, because Jupyverse refuses a second router that repeats a path.
        self._add_missing_routes(router)
        # Jupyverse's WebSocket auth would hold a database connection per open kernel socket.
        authorize_at_handshake_only(router, self.kernel_channels, self.auth_cache)
        super().include_router(router, **kwargs)

    def _add_missing_routes(self, router: APIRouter) -> None:
        auth = self._auth
        # Same permissions as the matching routes of the ABC.
        kernels_writer = Depends(auth.current_user(permissions={"kernels": ["write"]}))
        kernelspecs_reader = Depends(auth.current_user(permissions={"kernelspecs": ["read"]}))
        sessions_reader = Depends(auth.current_user(permissions={"sessions": ["read"]}))

        @router.post("/api/kernels", status_code=201)
        async def start_kernel(request: Request, user: User = kernels_writer):
            return await self.start_kernel(request, user)

        @router.get("/api/kernelspecs/{kernel_name}")
        async def get_kernelspec_model(kernel_name: str, user: User = kernelspecs_reader):
            return await self.get_kernelspec_model(kernel_name, user)

        @router.get("/api/sessions/{session_id}")
        async def get_session(session_id: str, user: User = sessions_reader):
            return await self.get_session(session_id, user)

    async def stop(self) -> None:
        """End every open kernel WebSocket: remote kernels keep running (they belong to the
        remote) unless configured otherwise; clients get 1012 and reconnect later."""
        for bridge in list(self._bridges):
            bridge.shutdown()
        if self.shutdown_kernels_on_stop:
            with anyio.move_on_after(10, shield=True):
                await self.service.shutdown_started_kernels()

    async def watch_connection_files(self, path: Path) -> None:
        return None  # kernels live on the remote: no local connection files

    # ---------------------------------------------------------------- status

    async def get_status(self, user: User):
        remotes = await self.service.status()
        counts = [r["kernels"] for r in remotes if isinstance(r["kernels"], int)]
        return {
            "started": _iso(self._app_ref.started_time),
            "last_activity": _iso(self._app_ref.last_activity),
            "connections": len(self._bridges),
            "kernels": sum(counts) if counts else None,
            "remote": remotes[0],  # the first (or only) remote
            "remotes": remotes,
            "pools": self.service.pool_status(remotes),
            # The front's server, event loop and the library changes applied in its process.
            "front": self.process_facts,
        }

    # ---------------------------------------------------------------- kernelspecs

    @answers_errors
    async def get_kernelspecs(self, user: User):
        # Enterprise Gateway lists what KERNEL_USERNAME may start (its `?user=`).
        specs = await self.service.kernelspecs(self.kernel_username(user))
        return {
            "default": specs["default"],
            "kernelspecs": {
                name: self._kernelspec_for_front(spec)
                for name, spec in specs["kernelspecs"].items()
                if is_name(name)
            },
        }

    @answers_errors
    async def get_kernelspec_model(self, kernel_name: str, user: User):
        name = checked_name(kernel_name, "Kernel spec")
        return self._kernelspec_for_front(await self.service.kernelspec(name))

    def _kernelspec_for_front(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec["front_name"]
        # The remote's resource URLs point at the remote; the browser can only reach the front.
        resources = spec.get("resources") or {}
        rewritten = {
            key: f"{self.base_url}kernelspecs/{name}/{url.rsplit('/', 1)[-1]}"
            for key, url in resources.items()
            if isinstance(url, str) and is_name(url.rsplit("/", 1)[-1])
        }
        kernel_spec = spec.get("spec")
        if isinstance(kernel_spec, dict) and spec["display_suffix"]:
            # With several remotes, users see where a kernel runs.
            display_name = f"{kernel_spec.get('display_name') or name}{spec['display_suffix']}"
            kernel_spec = {**kernel_spec, "display_name": display_name}
        return {"name": name, "spec": kernel_spec, "resources": rewritten}

    @answers_errors
    async def get_kernelspec(self, kernel_name, file_name, user: User):
        name = checked_name(kernel_name, "Kernel spec")
        file = checked_name(file_name, "Kernel spec resource")
        content, content_type = await self.service.kernelspec_file(name, file)
        headers = {"Cache-Control": "max-age=3600"}
        return Response(content, media_type=content_type or "application/octet-stream",
                        headers=headers)

    # ---------------------------------------------------------------- kernels

    @answers_errors
    async def get_kernels(self, user: User):
        return await self.service.kernels()

    @answers_errors
    async def start_kernel(self, request: Request, user: User):
        body = await json_object(request, self.allowed_origins)
        name = optional_str(body, "name")
        if name is not None:
            checked_name(name, "Kernel spec")
        env = check_env(body.get("env"))
        kernel = await self.service.start_kernel(name, optional_str(body, "path"), env,
                                                 self.kernel_username(user))
        return JSONResponse(kernel, status_code=201,
                            headers={"Location": f"{self.base_url}api/kernels/{kernel['id']}"})

    @answers_errors
    async def get_kernel(self, kernel_id, user: User):
        try:
            return await self.service.kernel(checked_kernel_id(kernel_id))
        except RemoteKernelsError as e:
            raise as_unavailable(e) from None

    @answers_errors
    async def shutdown_kernel(self, kernel_id, user: User):
        kernel_id = checked_kernel_id(kernel_id)
        await self.service.shutdown_kernel(kernel_id)
        self.end_kernel_sockets(kernel_id)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    def end_kernel_sockets(self, kernel_id: str) -> None:
        """Close the sockets open to a kernel the front shut down (deleted, culled), the
        executor's too (its pending cells go idle)."""
        for bridge in list(self._bridges):
            if bridge.kernel_id == kernel_id:
                bridge.kernel_gone()
        if self.executions is not None:
            self.executions.kernel_gone(kernel_id)

    @answers_errors
    async def interrupt_kernel(self, kernel_id, user: User):
        kernel_id = checked_kernel_id(kernel_id)
        try:
            await self.service.interrupt_kernel(kernel_id)
        finally:
            # Even when the remote could not deliver it (a dead kernel): the cells must stop.
            if self.executions is not None:
                self.executions.kernel_interrupted(kernel_id)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    @answers_errors
    async def restart_kernel(self, kernel_id, user: User):
        kernel_id = checked_kernel_id(kernel_id)
        model = await self.service.restart_kernel(kernel_id)
        if self.executions is not None:
            self.executions.kernel_restarted(kernel_id)
        return model

    @answers_errors
    async def execute_cell(self, request: Request, kernel_id, user: User):
        # Server-side execution writes into the front's collaborative documents
        # (execution/executor.py).
        if self.executions is None:
            raise execution_unavailable()
        kernel_id = checked_kernel_id(kernel_id)
        body = await json_object(request, self.allowed_origins)
        document_id, cell_id = required_str(body, "document_id"), required_str(body, "cell_id")
        queued = await self.executions.execute(kernel_id, document_id, cell_id)
        return {"document_id": document_id, "cell_id": cell_id, "queued": queued}

    # ---------------------------------------------------------------- sessions

    @answers_errors
    async def get_sessions(self, user: User):
        return await self.service.sessions()

    @answers_errors
    async def get_session(self, session_id: str, user: User):
        return await self.service.session(checked_session_id(session_id))

    @answers_errors
    async def create_session(self, request: Request, user: User):
        body = await json_object(request, self.allowed_origins)
        path = optional_str(body, "path")
        if path is None:
            raise bad_request("Missing field in JSON data: path")
        checked_path(path)
        session_type = optional_str(body, "type")
        if session_type is None:
            raise bad_request("Missing field in JSON data: type")
        name = optional_str(body, "name") or ""
        kernel_name, kernel_id, env = kernel_request(body)
        session = await self.service.create_session(
            path, name, session_type, kernel_name, kernel_id, env, self.kernel_username(user))
        logger.info("Session created", session_id=session["id"],
                    kernel_id=session["kernel"].get("id"))
        return JSONResponse(session, status_code=201,
                            headers={"Location": f"{self.base_url}api/sessions/{session['id']}"})

    @answers_errors
    async def rename_session(self, request: Request, user: User):
        # The ABC's PATCH route passes no path id: take it from the URL, as jupyter_server does.
        session_id = checked_session_id(request.path_params.get("session_id", ""))
        body = await json_object(request, self.allowed_origins)
        if body.get("id", session_id) != session_id:
            raise bad_request("Session id in the body does not match the URL")
        changes: dict[str, Any] = {}
        for key in ("path", "name", "type"):
            value = optional_str(body, key)
            if value is not None:
                changes[key] = checked_path(value) if key == "path" else value
        kernel_name, kernel_id, env = kernel_request(body)
        if "kernel" in body:
            changes["kernel"] = True
        return await self.service.update_session(session_id, changes, kernel_name, kernel_id,
                                                 env, self.kernel_username(user))

    @answers_errors
    async def delete_session(self, session_id: str, user: User):
        await self.service.delete_session(checked_session_id(session_id))
        return Response(status_code=HTTPStatus.NO_CONTENT)

    # ---------------------------------------------------------------- WebSocket

    async def kernel_channels(self, kernel_id, session_id, websocket_permissions):
        if websocket_permissions is None:
            return  # Jupyverse's auth already closed it with 1008
        websocket, _permissions = websocket_permissions
        try:
            if not origin_allowed(websocket, self.allowed_origins):
                raise refuse_origin(websocket)
            kernel_id = checked_kernel_id(kernel_id)
            if not session_id or len(session_id) > 256:
                raise bad_request("session_id query parameter missing or too long")
            remote = await self.service.owner(kernel_id)
            # A Jupyverse remote accepts a socket for an unknown kernel and then says
            # nothing: the bridge checks that the kernel exists while it opens the upstream.
            check = (partial(remote.kernel, kernel_id)
                     if await remote.check_before_socket(kernel_id) else None)
        except RemoteKernelsError as e:
            await deny(websocket, e)
            return
        bridge = KernelChannelsBridge(websocket, remote.client, kernel_id, session_id,
                                      kernel_exists=check,
                                      observers=self.observers.all, replay=self.replay)
        key = (kernel_id, session_id)
        older = self._live.get(key)
        # An away bridge is not replaced: the new socket claims its upstream and buffer.
        if older is not None and not older.away:
            # The older socket and its upstream go first: a remote that forgets a session
            # when its socket closes must not forget the newer one's.
            older.replace()
            with anyio.move_on_after(5):
                await older.wait_finished()
        self._live[key] = bridge
        self._bridges.add(bridge)
        try:
            await bridge.run()
        finally:
            self._bridges.discard(bridge)
            if self._live.get(key) is bridge:
                del self._live[key]


def _iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")

