from __future__ import annotations

import getpass
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from fps import Module
from jupyverse_api import App
from jupyverse_auth import Auth, AuthConfig, User
from jupyverse_frontend import FrontendConfig
from jupyverse_kernels import Kernels

from .activity import Activity
from .api.culling import Culler, CullPolicy
from .api.placement import Pools
from .api.routes import _RemoteKernels
from .api.service import KernelService
from .api.store import Store, default_store_path
from .config import ConfigError, RemoteKernelsConfig, load_config
from .execution.executor import Executions
from .host.auth_cache import cached_auth
from .host.collaboration_guards import guard_file_ids, guard_rooms
from .host.exit_status import exit_nonzero_on_failure, refuse_to_start
from .host.handshake_auth import authorize_at_handshake_only
from .host.labextensions import installed, without_collaboration
from .host.server_patches import tune_server, use_event_loop
from .host.unread_body import CloseAfterUnreadBody
from .host.uvicorn_server import UvicornServer, listen_address, login_url
from .local.kernel_host import LocalKernels
from .metrics import Metrics, MetricsRoutes
from .relay.busy_watch import BusyWatch
from .relay.replay import ReplayBuffers, ReplayLimits
from .remote.health import Probes
from .remote.kernels import RemoteKernels
from .remote.rest_client import RemoteClient

logger = structlog.get_logger()


class RemoteKernelsModule(Module):
    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name)
        try:
            self.config = load_config(kwargs)
        except ConfigError as error:
            refuse_to_start(str(error))
            raise
        # fps builds the modules before it starts the event loop: the loop is chosen here.
        # What the front changed in its own process, for /api/status (docs/operators/
        # front-process.md).
        self.process_facts: dict[str, Any] = {
            "server": self.config.server, "event_loop": use_event_loop(self.config.event_loop),
            "tuned": tune_server() if self.config.tune_server else []}
        self.kernels: _RemoteKernels | None = None
        self._signal_watch: anyio.abc.TaskGroup | None = None
        self._clients: list[RemoteClient] = []
        self._store: Store | None = None
        self._executions: Executions | None = None
        # Before fps-file-id (collaboration plugins) starts watching files.
        guard_file_ids()
        self._local: LocalKernels | None = None
        self._culler: Culler | None = None
        self._culling: anyio.CancelScope | None = None
        self._uvicorn: UvicornServer | None = None
        self._probes: Probes | None = None
        self._busy_watch: BusyWatch | None = None

    async def prepare(self) -> None:
        # fps shares this list of failures between all modules (ours included) from now on.
        exit_nonzero_on_failure(self.exceptions)
        local = self._local_kernels_module()
        if local is not None:
            if not self.config.all_remotes() and not self.config.local_kernels:
                # Installed on the server that runs the kernels: nothing to proxy, but its
                # kernel WebSockets get the front's handshake-only authentication.
                await self._authorize_local_kernel_sockets_at_handshake()
                return
            refuse_to_start(
                "fps-kernels and fps-remote-kernels both serve /api/kernels: "
                "add --disable kernels to run kernels on the remote "
                f"(or remove the '{local.name}' module from the configuration); for local "
                "kernels next to remote ones, set remote_kernels.local_kernels=true instead",
                self.exceptions)
            return
        if not self.config.all_remotes() and not self.config.local_kernels:
            refuse_to_start(
                "remote_kernels.url is required: the URL of the server that runs the kernels, "
                "e.g. --set remote_kernels.url=http://kernel-host:8002 (or "
                "remote_kernels.local_kernels=true for kernels on this machine)",
                self.exceptions)
            return
        # Local kernels: a child kernel server of the front's, one more remote, listed last.
        self._local = LocalKernels(self.config) if self.config.local_kernels else None
        remote_configs = [*self.config.all_remotes(), *([self._local.remote] if self._local
                                                        else [])]
        self.put(self.config, RemoteKernelsConfig)
        if self.config.server == "uvicorn" and not await self._serve_with_uvicorn():
            return
        app = await self.get(App)
        # An early answer (413, 415, auth refusal) must not leave a connection hanging.
        app.add_middleware(CloseAfterUnreadBody)
        auth = await self.get(Auth)  # type: ignore[type-abstract]
        auth_config = await self.get(AuthConfig)
        frontend_config = await self.get(FrontendConfig)

        # Closed in stop(), after the kernels the front started may have been shut down.
        self._clients = [RemoteClient(remote, self.config) for remote in remote_configs]
        # One record of kernel activity, fed by the bridges, read by the models and culling.
        self.activity = activity = Activity()
        remotes = [RemoteKernels(client, self.config.kernelspecs_cache_ttl, activity)
                   for client in self._clients]
        self._store = store = Store(self.config.sessions_db or default_store_path())
        service = KernelService(
            remotes, store, self.config.env_allowlist,
            {remote.name: remote.kernelspecs for remote in remote_configs},
            Pools({remote.name: remote.pool for remote in remote_configs}),
            reconcile_timeout=self.config.connect_timeout,
            listing_timeout=self.config.connect_timeout,
        )
        # The sick remotes probed in the background until they answer (remote/health.py).
        self._probes = Probes([(client.health, client.probe) for client in self._clients])
        # The routes check the front's auth through a short-lived cache of successful checks.
        routes_auth, auth_cache = cached_auth(auth, self.config.auth_cache_ttl)
        self.kernels = _RemoteKernels(
            app,
            routes_auth,
            service,
            frontend_config.base_url,
            self._allowed_origins(),
            kernel_username_of(getattr(auth_config, "mode", "token"), self.config.kernel_username),
            self.config.shutdown_kernels_on_stop,
            ReplayBuffers(ReplayLimits(
                self.config.replay_grace_period, self.config.replay_buffer_bytes,
                self.config.replay_buffer_messages, self.config.replay_total_bytes)),
            auth_cache,
        )
        self.kernels.observers.add(activity)
        self.kernels.process_facts = self.process_facts
        # After activity: it sees the socket closed first.
        self._busy_watch = BusyWatch(activity, service)
        self.kernels.observers.add(self._busy_watch)
        self._serve_metrics(app, routes_auth, remotes, store, self.kernels.replay)
        if self.config.cull_idle_timeout > 0:
            self._culler = Culler(service, CullPolicy(
                self.config.cull_idle_timeout, self.config.cull_interval,
                self.config.cull_connected, self.config.cull_busy),
                self._kernel_culled)
        self.put(self.kernels, Kernels)
        await self._guard_collaboration_rooms()
        # The front starts even when the remotes are down: nothing is asked of them here.
        logger.info("Kernels served from remotes",
                    remotes=[f"{r.name}={r.client.name}" for r in remotes])

    async def start(self) -> None:
        async with anyio.create_task_group() as tg:
            self._signal_watch = tg
            tg.start_soon(self._stop_gracefully_on_sigterm)
            if self._uvicorn is not None:
                self._uvicorn.bind()
                tg.start_soon(self._uvicorn.serve)
            if self._executions is not None:
                tg.start_soon(self._executions.run)
            if self._busy_watch is not None:
                tg.start_soon(self._busy_watch.run)
            if self._local is not None:
                tg.start_soon(self._local.run)  # not awaited: the front starts at once
            if self._culler is not None:
                tg.start_soon(self._cull, self._culler)
            if self._probes is not None:
                tg.start_soon(self._probes.run)
            self.done()

    async def _serve_with_uvicorn(self) -> bool:
        from fastapi import FastAPI
        from jupyverse_api.main import Host, QueryParams

        server = self.parent.modules.get("server") if self.parent is not None else None
        if server is not None and type(server).__module__.startswith("fps.web."):
            refuse_to_start("remote_kernels.server=uvicorn serves the front in place of "
                            "Jupyverse's own server: add --set start_server=false",
                            self.exceptions)
            return False
        host_url = (await self.get(Host)).url
        # fps-auth adds its token to these while it prepares: read when the front listens.
        query = (await self.get(QueryParams)).d
        extra = getattr(getattr(self.parent, "jupyverse_config", None), "query_params", None)
        self._uvicorn = UvicornServer(await self.get(FastAPI), *listen_address(host_url),
                                      login_url=lambda: login_url(host_url, query, extra))
        return True

    async def _cull(self, culler: Culler) -> None:
        with anyio.CancelScope() as self._culling:
            await culler.run()

    async def _stop_gracefully_on_sigterm(self) -> None:
        # fps stops gracefully on Ctrl-C only; service managers send SIGTERM. Stopping
        # gracefully closes kernel sockets with 1012 (clients reconnect) and honours
        # shutdown_kernels_on_stop, instead of dropping everything. fps's public exit_app()
        # stops the application as its own way out does; turning SIGTERM into a SIGINT would
        # do nothing where SIGINT is ignored (every `cmd &` of a shell script).
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                logger.info("SIGTERM received: stopping")
                self.exit_app()
                return

    async def stop(self) -> None:
        if self._culling is not None:
            self._culling.cancel()  # before the clients and the store it uses close
        if self.kernels is not None:
            await self.kernels.stop()
        if self._local is not None:
            await self._local.stop()
        for client in self._clients:
            await client.aclose()
        if self._store is not None:
            self._store.close()
        if self._uvicorn is not None:
            await self._uvicorn.stop()
        if self._signal_watch is not None:
            self._signal_watch.cancel_scope.cancel()

    def _kernel_culled(self, kernel_id: str, remote: str) -> None:
        if self.kernels is not None:
            self.kernels.end_kernel_sockets(kernel_id)
        self.metrics.kernel_culled(remote)

    def _serve_metrics(self, app: App, auth: Auth, remotes: list[RemoteKernels], store: Store,
                       replay: ReplayBuffers | None) -> None:
        names = [remote.name for remote in remotes]
        self.metrics = metrics = Metrics(
            names, lambda kernel_id: store.kernel_remote(kernel_id) or names[0], replay)
        metrics.health = lambda: {r.name: r.client.health.healthy for r in remotes}
        for remote in remotes:
            remote.client.request_observer = metrics.remote_request
            remote.on_kernel_start = metrics.kernel_started
        if self._local is not None:
            local = self._local
            metrics.local_restarts = lambda: local.restarts
        assert self.kernels is not None
        self.kernels.observers.add(metrics)
        MetricsRoutes(app, auth, metrics, self.config.authenticate_prometheus)

    async def _guard_collaboration_rooms(self) -> None:
        # With the collaboration plugins, deleting an open notebook would end the front.
        if not self._sibling_from("fps_yjs."):
            logger.info("Server-side execution unavailable: it needs the collaboration plugins "
                        "(pip install \"jupyverse[collaboration]\")")
            await self._collaboration_labextensions_off()
            return
        from jupyverse_yjs import Yjs

        yjs = await self.get(Yjs)  # type: ignore[type-abstract]
        if guard_rooms(yjs):
            logger.info("Collaboration rooms guarded: a deleted open notebook closes its room "
                        "only")
        else:
            logger.warning("Collaboration rooms not guarded: deleting an open notebook may "
                           "end the server")
        await self._serve_execution(yjs)

    async def _collaboration_labextensions_off(self) -> None:
        # Installed but not enabled, the collaboration plugins' JupyterLab extensions would
        # still load and break notebooks (host/labextensions.py).
        if not self._sibling_from("jupyverse_lab."):
            return
        from jupyverse_lab import PageConfig

        extensions = installed(Path(sys.prefix) / "share" / "jupyter" / "labextensions")
        if extensions:
            page_config = await self.get(PageConfig)
            page_config.register(without_collaboration(extensions))
            logger.info("Collaboration JupyterLab extensions left out: the collaboration "
                        "plugins are not enabled", extensions=sorted(extensions))

    async def _serve_execution(self, yjs: Any) -> None:
        # POST /api/kernels/{id}/execute (JupyterLab's serverSideExecution) writes into the
        # collaboration rooms: without them the route answers 501.
        from jupyverse_file_id import FileId

        assert self.kernels is not None
        file_id = await self.get(FileId)  # type: ignore[type-abstract]
        kernels = self.kernels
        self._executions = kernels.executions = Executions(
            kernels.service, yjs, file_id, self.config.execution_queue_limit,
            lambda: kernels.observers.all,
            self.config.connect_timeout + 2 * self.config.request_timeout,
            self.config.execution_output_limit or None)
        logger.info("Server-side execution available (POST /api/kernels/{id}/execute)",
                    execution_queue_limit=self.config.execution_queue_limit)

    def _sibling_from(self, package: str) -> Module | None:
        siblings = self.parent.modules.values() if self.parent is not None else ()
        return next((m for m in siblings if type(m).__module__.startswith(package)), None)

    def _local_kernels_module(self) -> Module | None:
        """The fps-kernels module next to this one, if any."""
        siblings = self.parent.modules.values() if self.parent is not None else ()
        for module in siblings:
            if module is not self and type(module).__module__.startswith("fps_kernels."):
                return module
        return None

    async def _authorize_local_kernel_sockets_at_handshake(self) -> None:
        # fps-kernels' WebSocket route holds one of fps-auth's 15 pooled database connections
        # per open socket: the 16th kernel socket of the server (all fronts and users
        # together) would wait 30 s and fail, and so would every REST request meanwhile.
        app = await self.get(App)
        kernels = await self.get(Kernels)  # type: ignore[type-abstract]
        fastapi_app = getattr(app, "_app", None)
        router = getattr(fastapi_app, "router", None)
        if router is not None and authorize_at_handshake_only(router, kernels.kernel_channels):
            logger.info("No remote_kernels.url: fps-kernels runs the kernels here; kernel "
                        "WebSockets are authenticated at the handshake only")
        else:
            logger.warning("No remote_kernels.url: fps-kernels runs the kernels here, and its "
                           "kernel WebSockets keep their database connection while open")

    def _allowed_origins(self) -> list[str]:
        # Jupyverse's --allow-origin lives in the parent module's configuration.
        jupyverse_config = getattr(self.parent, "jupyverse_config", None)
        return list(getattr(jupyverse_config, "allow_origins", None) or [])


def kernel_username_of(auth_mode: str, configured: str | None) -> Callable[[User], str]:
    """KERNEL_USERNAME for a front user. In `user` mode it is the user's name; in token and
    noauth modes the single user's `username` is the front's token (or a random id), which must
    never leave the front: the kernel runs for whoever runs the front."""
    if auth_mode == "user":
        return lambda user: user.username
    owner = configured or getpass.getuser()
    return lambda user: owner
