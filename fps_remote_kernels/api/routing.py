"""Kernels over one or several remotes: each kernel id is routed to the remote that owns it
(remembered in the store, so ids stay routable after a restart of the front); a new kernel
goes to the remote that serves its kernelspec, or to the pool member placement chooses (the
next if that member fails). One remote down never breaks the others: listings return what
the reachable remotes have, and list the kernels the front knows on an unreachable one as
unreachable (not gone); a kernel gone from its remote is answered dead for a while
(vanished.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import structlog

from ..activity import format_time
from ..errors import RemoteKernelsError, not_found, pool_unavailable
from ..remote.health import confirm as health_probe
from ..remote.kernels import RemoteKernels
from . import vanished
from .kernelspecs import Kernelspecs
from .remotes import gather

logger = structlog.get_logger()

# How long the front remembers when it learnt of a kernel, so that a listing sent before
# then does not make it forget the kernel (see _kernels_of); far above any request timeout.
_RECENT_SECONDS = 3600.0
_MAX_RECENT = 10_000


class KernelRouting(Kernelspecs):
    env_allowlist: list[str]
    reconcile_timeout: float
    vanished: vanished.VanishedKernels
    _learnt: dict[str, float]

    async def kernels(self) -> list[dict[str, Any]]:
        results = await self._on_each(self._kernels_of)
        self._raise_if_all_failed(results)
        specs = await self._specs_or_none()
        models: list[dict[str, Any]] = []
        for name in self.order:
            found = results.get(name)
            if isinstance(found, RemoteKernelsError):
                if found.status >= 500:
                    # Its kernels are not gone: listed as unreachable until it answers.
                    remote = self.remotes[name]
                    models.extend(self._unreachable_model(remote, kernel_id, kernel_name, found,
                                                          specs)
                                  for kernel_id, kernel_name in self.store.kernel_names_of(name))
                continue
            if found is None:
                continue
            for model in found:
                models.append({**model, "name": self.front_kernel_name(name, model.get("name"),
                                                                       specs)})
        return models

    def _unreachable_model(self, remote: RemoteKernels, kernel_id: str, name: str | None,
                           error: RemoteKernelsError, specs: dict[str, Any] | None
                           ) -> dict[str, Any]:
        """A kernel of a remote that does not answer: what the front knows of it, state
        `unknown` (a state JupyterLab knows), `reachable: false` and why."""
        model = remote.activity.merge({
            "id": kernel_id, "name": self.front_kernel_name(remote.name, name or "", specs),
            "last_activity": None, "execution_state": "unknown", "connections": 0})
        if model["last_activity"] is None:
            # Never seen on a socket of the front's: jupyter_server's models (and Jupyverse's
            # session model, which refuses null) always carry a time; now is when the front
            # last knew of it.
            model["last_activity"] = format_time(time.time())
        return {**model, "execution_state": "unknown", "reachable": False,
                "message": error.message}

    async def _kernels_of(self, remote: RemoteKernels) -> list[dict[str, Any]]:
        asked = time.monotonic()
        listed = await remote.kernels()
        several = len(self.order) > 1
        if listed is not None:
            if not several:
                return listed
            ids = set()
            for model in listed:
                if isinstance(model, dict) and isinstance(model.get("id"), str):
                    ids.add(model["id"])
                    name = model.get("name")
                    self.store.remember_kernel(model["id"], remote.name,
                                               name=name if isinstance(name, str) else None)
            # The remote's listing is the truth about kernels the front knew before asking:
            # those it does not list are gone (culled, crashed, the remote restarted).
            for kernel_id in self.store.kernels_of(remote.name):
                if kernel_id not in ids and self._learnt.get(kernel_id, 0.0) < asked:
                    self._vanish(remote, kernel_id)
            doomed = set(self.store.doomed_of(remote.name))
            if doomed:
                await self._reap(remote, doomed & ids)
                for kernel_id in doomed - ids:
                    self.store.forget_kernel(kernel_id)
                listed = [m for m in listed if not isinstance(m, dict) or m.get("id") not in
                          doomed]
            return listed
        # The remote does not list kernels (a gateway): report the ones the front knows.
        if several:
            await self._reap(remote, set(self.store.doomed_of(remote.name)))
        tracked = self.store.kernels_of(remote.name)
        found = await gather([self._tracked_kernel(remote, k) for k in tracked])
        return [model for model in found if model is not None]

    async def _reap(self, remote: RemoteKernels, doomed: set[str]) -> None:
        """Shut down the kernels users deleted while `remote` did not answer."""
        async def one(kernel_id: str) -> None:
            try:
                await remote.shutdown_kernel(kernel_id)
            except RemoteKernelsError as e:
                if e.status != 404:
                    return  # tried again at the next listing
            self.store.forget_kernel(kernel_id)
            logger.info("Kernel deleted while its remote was unreachable shut down",
                        kernel_id=kernel_id, remote=remote.name)

        async with anyio.create_task_group() as tg:
            for kernel_id in doomed:
                tg.start_soon(one, kernel_id)

    def _vanish(self, remote: RemoteKernels, kernel_id: str) -> None:
        """A kernel its remote no longer has: forgotten, and answered as dead for a while if
        the front knew it (see vanished.py)."""
        name = self.store.kernel_name(kernel_id)
        if name is not None or self.store.kernel_remote(kernel_id) is not None \
                or remote.activity.seen_alive(kernel_id, within=vanished.KEEP_SECONDS):
            # `offerer:name` always names the spec among several remotes (see kernelspec).
            self.vanished.add(kernel_id, name or "" if len(self.order) == 1
                              else f"{self.pools.offerer(remote.name)}:{name or ''}")
        self._forget(remote, kernel_id)

    def _forget(self, remote: RemoteKernels, kernel_id: str) -> None:
        self.store.forget_kernel(kernel_id)
        remote.activity.forget(kernel_id)

    def _learn(self, kernel_id: str, remote: str, started_by_front: bool = False,
               name: str | None = None) -> None:
        self.store.remember_kernel(kernel_id, remote, started_by_front, name)
        now = time.monotonic()
        if len(self._learnt) >= _MAX_RECENT:
            self._learnt = {k: t for k, t in self._learnt.items() if now - t < _RECENT_SECONDS}
            while len(self._learnt) >= _MAX_RECENT:
                self._learnt.pop(next(iter(self._learnt)))
        self._learnt[kernel_id] = now

    async def _tracked_kernel(self, remote: RemoteKernels, kernel_id: str
                              ) -> dict[str, Any] | None:
        try:
            return await remote.kernel(kernel_id)
        except RemoteKernelsError as e:
            if e.status != 404:
                raise
            self._vanish(remote, kernel_id)  # culled or crashed on the remote
            return None

    async def owner(self, kernel_id: str) -> RemoteKernels:
        """The remote that runs `kernel_id`; 404 if none does."""
        if self.single is not None:
            return self.single
        if self.store.is_doomed(kernel_id):
            raise not_found(f"Kernel {kernel_id}")  # deleted while its remote was down
        known = self.store.kernel_remote(kernel_id)
        if known in self.remotes:
            return self.remotes[known]
        results = await self._on_each(lambda remote: remote.kernel(kernel_id))
        for name in self.order:
            found = results.get(name)
            if not isinstance(found, RemoteKernelsError):
                kernel_name = found.get("name") if isinstance(found, dict) else None
                self._learn(kernel_id, name,
                            name=kernel_name if isinstance(kernel_name, str) else None)
                return self.remotes[name]
        errors = [e for e in results.values() if isinstance(e, RemoteKernelsError)]
        if errors and all(e.status >= 500 for e in errors):
            raise errors[0]  # nobody answered: say the remote is unreachable, not 404
        raise not_found(f"Kernel {kernel_id}")

    async def kernel(self, kernel_id: str) -> dict[str, Any]:
        """A kernel's model; a kernel that vanished from its remote lately is `dead`."""
        try:
            remote = await self.owner(kernel_id)
            try:
                model = await remote.kernel(kernel_id)
            except RemoteKernelsError as e:
                if e.status == 404:
                    self._vanish(remote, kernel_id)
                raise
        except RemoteKernelsError as e:
            dead = self.vanished.dead_model(kernel_id) if e.status == 404 else None
            if dead is None:
                raise
            return dead
        return await self._front_model(remote, model)

    async def _front_model(self, remote: RemoteKernels, model: dict[str, Any]) -> dict[str, Any]:
        if len(self.order) == 1:
            return model
        specs = await self._specs_or_none()
        return {**model, "name": self.front_kernel_name(remote.name, model.get("name"), specs)}

    async def start_kernel(self, front_name: str | None, path: str | None,
                           env: dict[str, str], username: str) -> dict[str, Any]:
        spec = await self.resolve_spec(front_name)
        full_env = {**self._allowlisted_env(), **env, "KERNEL_USERNAME": username}
        pool = spec.get("pool")
        if pool is None:
            remote = self.remotes[spec["remote"]]
            model = await remote.start_kernel(spec["remote_name"], path, full_env)
        else:
            remote, model = await self._start_in_pool(pool, spec, path, full_env)
        self._learn(model["id"], remote.name, started_by_front=True, name=spec["remote_name"])
        logger.info("Kernel started on the remote", kernel_id=model["id"], remote=remote.name,
                    pool=pool, kernel_name=spec["remote_name"])
        return {**model, "name": spec["front_name"]}

    async def _start_in_pool(self, pool: str, spec: dict[str, Any], path: str | None,
                             env: dict[str, str]) -> tuple[RemoteKernels, dict[str, Any]]:
        """Start the kernel on the member the placement chooses; a member that is down or
        fails (5xx) is skipped for the next, each member once; a refusal (4xx) would be the
        same on every member and is answered as is. Members known sick are not tried: the
        start never waits for them (when every member is sick, each is probed once, within
        the connect timeout, and those that answer are tried)."""
        members = spec["members"]
        await self._reconcile(members)
        # A member a listing found slow is probed before placing: busy is not sick.
        suspects = [m for m in members if self.remotes[m].client.health.suspected]
        if suspects:
            await self._answering(suspects)
        candidates = [m for m in members if not self.remotes[m].client.health.avoided]
        if not candidates:
            candidates = await self._answering(members)
        failures = [f"{m}: {self.remotes[m].client.health.error().message}"
                    for m in members if m not in candidates]
        order = self.pools.order(pool, candidates, self.store.kernel_counts())
        for member in order:
            remote = self.remotes[member]
            try:
                with self.pools.starting(pool, member):
                    return remote, await remote.start_kernel(spec["remote_name"], path, env)
            except RemoteKernelsError as e:
                if e.status < 500:
                    raise
                failures.append(f"{member}: {e.message}")
                logger.warning("A pool member could not start a kernel; trying the next",
                               pool=pool, member=member, status=e.status, message=e.message)
        raise pool_unavailable(pool, spec["front_name"], failures)

    async def _answering(self, members: list[str]) -> list[str]:
        """Those of `members` that answer a probe now (each bounded by connect_timeout)."""
        async def one(name: str) -> None:
            client = self.remotes[name].client
            await health_probe(client.health, client.probe)

        async with anyio.create_task_group() as tg:
            for name in members:
                tg.start_soon(one, name)
        return [m for m in members if not self.remotes[m].client.health.avoided]

    async def _reconcile(self, members: list[str]) -> None:
        """Bring the store's kernels of `members` in line with what each lists now, so that
        kernels gone with a restarted member do not steer placement; a member known sick is
        not asked; one that does not answer within the reconcile timeout (connect_timeout)
        keeps what the store says, and is probed before placing (sick if the probe gets no
        answer either: placement skips it)."""
        async def one(name: str) -> None:
            await self._bounded(self.remotes[name], self._kernels_of, self.reconcile_timeout,
                                confirm=True)

        async with anyio.create_task_group() as tg:
            for name in members:
                tg.start_soon(one, name)

    def _allowlisted_env(self) -> dict[str, str]:
        return {name: os.environ[name] for name in self.env_allowlist if name in os.environ}

    async def shutdown_kernel(self, kernel_id: str) -> None:
        if self.vanished.discard(kernel_id):
            return  # gone already: deleting it is done
        remote = await self.owner(kernel_id)
        try:
            await remote.shutdown_kernel(kernel_id)
        except RemoteKernelsError as e:
            if e.status != 503 or self.single is not None:
                raise
            # Listed as unreachable, deleted by the user: it goes from the listings (and its
            # sessions with it) now, and from its remote when that answers again.
            self.store.doom_kernel(kernel_id)
            remote.activity.forget(kernel_id)
            logger.warning("Kernel deleted while its remote is unreachable; it is shut down "
                           "when the remote answers again", kernel_id=kernel_id,
                           remote=remote.name)
            return
        self._forget(remote, kernel_id)

    async def interrupt_kernel(self, kernel_id: str) -> None:
        await (await self.owner(kernel_id)).interrupt_kernel(kernel_id)

    async def restart_kernel(self, kernel_id: str) -> dict[str, Any]:
        remote = await self.owner(kernel_id)
        return await self._front_model(remote, await remote.restart_kernel(kernel_id))

    async def shutdown_started_kernels(self) -> None:
        """Shut down, all at once, the kernels the front started (shutdown_kernels_on_stop)."""
        started = [(k, self.remotes[r]) for k, r in self.store.kernels_started_by_front()
                   if r in self.remotes]
        logger.info("Shutting down the kernels the front started", count=len(started))

        async def one(kernel_id: str, remote: RemoteKernels) -> None:
            try:
                await remote.shutdown_kernel(kernel_id)
            except RemoteKernelsError as e:
                if e.status != 404:
                    logger.warning("Could not shut down a kernel", kernel_id=kernel_id,
                                   remote=remote.name, message=e.message)
                    return
            self.store.forget_kernel(kernel_id)

        async with anyio.create_task_group() as tg:
            for kernel_id, remote in started:
                tg.start_soon(one, kernel_id, remote)
