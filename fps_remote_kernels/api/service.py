"""The kernels API over one or several remotes.

Kernelspecs are merged (a clashing name is prefixed with its remote, e.g. `gpu:python3`);
a kernel or session goes to the remote that serves its kernelspec; kernel ids are routed to
the remote that owns them (remembered in the store, so they stay routable after a restart of
the front). Sessions live on the remote when there is a single remote whose session API is
complete (Jupyverse, jupyter_server); otherwise the front keeps them itself, in the store.
One remote down never breaks the others: listings return what the reachable remotes have,
and list the kernels the front knows on an unreachable one as unreachable (not gone).

Remotes may form pools (placement.py): a pool offers its members' kernelspecs once, and a new
kernel goes to the member the placement chooses, the next one if that member fails.
"""

from __future__ import annotations

import fnmatch
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import structlog

from ..activity import format_time
from ..errors import RemoteKernelsError, not_found, pool_unavailable
from ..remote.kernels import RemoteKernels
from . import vanished
from .placement import Pools
from .store import Store, StoredSession

logger = structlog.get_logger()
T = TypeVar("T")

# How long the front remembers when it learnt of a kernel, so that a listing sent before
# then does not make it forget the kernel (see _kernels_of); far above any request timeout.
_RECENT_SECONDS = 3600.0
_MAX_RECENT = 10_000


class KernelService:
    def __init__(self, remotes: list[RemoteKernels], store: Store, env_allowlist: list[str],
                 patterns: dict[str, list[str]], pools: Pools | None = None,
                 reconcile_timeout: float = 5.0) -> None:
        self.remotes = {remote.name: remote for remote in remotes}
        self.order = [remote.name for remote in remotes]
        self.store = store
        self.env_allowlist = env_allowlist
        self.patterns = patterns
        self.pools = pools or Pools({})
        # How long a start waits for a pool member's listing before placing (see _reconcile).
        self.reconcile_timeout = reconcile_timeout
        self.vanished = vanished.VanishedKernels()
        # When the front learnt of each recent kernel (time.monotonic()).
        self._learnt: dict[str, float] = {}

    @property
    def single(self) -> RemoteKernels | None:
        return self.remotes[self.order[0]] if len(self.order) == 1 else None

    async def remote_sessions(self) -> RemoteKernels | None:
        """The remote that keeps sessions, if sessions live on the remote."""
        single = self.single
        if single is not None and (await single.kind()).remote_sessions:
            return single
        return None

    # ---------------------------------------------------------------- kernelspecs

    async def kernelspecs(self, user: str | None = None) -> dict[str, Any]:
        """The merged kernelspecs, each with `remote` and `remote_name` for routing, its
        `offerer` (a remote, or the pool of its remotes) and the `members` that offer it
        (one remote, or the members of a pool that have it and answered); `unavailable`:
        the offerers none of whose remotes answered. With `user`, what remotes that filter
        per user (Enterprise Gateway) offer to that user."""
        results = await self._on_each(lambda remote: remote.kernelspecs(user))
        merged: dict[str, dict[str, Any]] = {}
        offered: dict[tuple[str, str], dict[str, Any]] = {}
        default = None
        several = len(self.order) > 1
        for name in self.order:
            specs = results.get(name)
            if specs is None or isinstance(specs, RemoteKernelsError):
                continue
            offerer = self.pools.offerer(name)
            for spec_name, spec in specs["kernelspecs"].items():
                if not isinstance(spec, dict) or not self._offered(name, spec_name):
                    continue
                same = offered.get((offerer, spec_name))
                if same is not None:  # another member of the pool has it: offered once
                    same["members"].append(name)
                    continue
                front_name = spec_name if spec_name not in merged else f"{offerer}:{spec_name}"
                merged[front_name] = offered[(offerer, spec_name)] = {
                    **spec, "remote": name, "remote_name": spec_name, "front_name": front_name,
                    "offerer": offerer, "pool": self.pools.pool_of(name), "members": [name],
                    "display_suffix": f" ({offerer})" if several else ""}
                if default is None and spec_name == specs.get("default"):
                    default = front_name
        self._raise_if_all_failed(results)
        answered = {self.pools.offerer(n) for n, r in results.items()
                    if not isinstance(r, RemoteKernelsError)}
        unavailable = sorted({self.pools.offerer(n) for n in self.order} - answered)
        return {"default": default or next(iter(merged), None), "kernelspecs": merged,
                "unavailable": unavailable}

    def _offered(self, remote: str, spec_name: str) -> bool:
        return any(fnmatch.fnmatchcase(spec_name, p) for p in self.patterns.get(remote, ["*"]))

    async def kernelspec(self, front_name: str) -> dict[str, Any]:
        specs = (await self.kernelspecs())["kernelspecs"]
        spec = specs.get(front_name)
        if spec is None and ":" in front_name:
            # `remote:name` (or `pool:name`) always names a spec, clashing or not.
            remote, _, name = front_name.partition(":")
            spec = next((s for s in specs.values()
                         if s["offerer"] == remote and s["remote_name"] == name), None)
            if spec is None:
                # `member:name` pins a pool's spec to that member.
                pooled = next((s for s in specs.values() if s["pool"] is not None
                               and remote in s["members"] and s["remote_name"] == name), None)
                if pooled is not None:
                    spec = {**pooled, "remote": remote, "members": [remote], "pool": None}
        if spec is None:
            raise not_found(f"Kernel spec {front_name}")
        return spec

    async def kernelspec_file(self, front_name: str, file_name: str) -> tuple[bytes, str | None]:
        spec = await self.kernelspec(front_name)
        return await self.remotes[spec["remote"]].kernelspec_file(spec["remote_name"], file_name)

    async def resolve_spec(self, front_name: str | None) -> dict[str, Any]:
        """The spec to start (the default if None); 501 if no remote offers it, as
        jupyter_server answers for a missing kernelspec."""
        specs = await self.kernelspecs()
        name = front_name or specs["default"]
        try:
            return await self.kernelspec(name) if name else {}
        except RemoteKernelsError:
            pass
        if specs["unavailable"]:
            # It may be offered by a remote or pool that does not answer now: try again later.
            raise RemoteKernelsError(
                503, f"The '{name}' kernel is not available now: no answer from "
                f"{', '.join(specs['unavailable'])}", "Service Unavailable")
        raise RemoteKernelsError(
            501, f"The '{name}' kernel is not available on the remote kernel servers. "
            "Please pick another suitable kernel instead.", "Not Implemented")

    def front_kernel_name(self, remote: str, name: Any, specs: dict[str, Any] | None) -> Any:
        if specs is None or len(self.order) == 1:
            return name
        offerer = self.pools.offerer(remote)
        for spec in specs["kernelspecs"].values():
            if spec["offerer"] == offerer and spec["remote_name"] == name:
                return spec["front_name"]
        # Its remote's specs are not offered now (it does not answer): never the plain name
        # of another remote's spec.
        return f"{offerer}:{name}" if name in specs["kernelspecs"] else name

    # ---------------------------------------------------------------- kernels

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
        found = await _gather([self._tracked_kernel(remote, k) for k in tracked])
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
        same on every member and is answered as is."""
        await self._reconcile(spec["members"])
        order = self.pools.order(pool, spec["members"], self.store.kernel_counts())
        failures = []
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

    async def _reconcile(self, members: list[str]) -> None:
        """Bring the store's kernels of `members` in line with what each lists now, so that
        kernels gone with a restarted member do not steer placement; a member that does not
        answer within the connect timeout keeps what the store says (placement skips it if
        it is down)."""
        async def one(name: str) -> None:
            with anyio.move_on_after(self.reconcile_timeout):
                try:
                    await self._kernels_of(self.remotes[name])
                except RemoteKernelsError:
                    pass

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

    # ---------------------------------------------------------------- sessions

    async def sessions(self) -> list[dict[str, Any]]:
        on_remote = await self.remote_sessions()
        if on_remote is not None:
            return await on_remote.sessions()
        stored = self.store.sessions()
        kernels = await _gather([self._session_kernel(s.kernel_id) for s in stored])
        return [_session_model(s, k) for s, k in zip(stored, kernels, strict=True)
                if k is not None]

    async def _session_kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """The kernel of a front-kept session; listed as unreachable if its remote does not
        answer (JupyterLab would drop a session missing from the list). A kernel gone from
        its remote (culled, crashed) is forgotten, with its sessions."""
        try:
            model = await self.kernel(kernel_id)
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

    # ---------------------------------------------------------------- status

    async def status(self) -> list[dict[str, Any]]:
        results = await self._on_each(lambda remote: remote.status())
        health = []
        for name in self.order:
            remote = self.remotes[name]
            result = results.get(name)
            entry: dict[str, Any] = {"name": name, "url": remote.client.name,
                                     "kind": remote.kind_name, "reachable": True,
                                     "message": None, "kernels": None,
                                     "pool": self.pools.pool_of(name),
                                     # REST may answer where the kernel socket cannot open.
                                     "kernel_socket_error": remote.client.kernel_socket_problem}
            if isinstance(result, RemoteKernelsError):
                entry["reachable"] = False
                entry["message"] = result.message
            elif isinstance(result, dict) and isinstance(result.get("kernels"), int):
                entry["kernels"] = result["kernels"]
            health.append(entry)
        return health

    def pool_status(self, health: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each pool's members, their health (from `status()`) and kernel counts."""
        return self.pools.summaries(health, self.store.kernel_counts())

    # ---------------------------------------------------------------- helpers

    async def _on_each(self, call: Callable[[RemoteKernels], Awaitable[T]]
                       ) -> dict[str, T | RemoteKernelsError]:
        """`call` on every remote at once; a remote's failure is its result, not ours."""
        results: dict[str, T | RemoteKernelsError] = {}

        async def one(name: str) -> None:
            try:
                results[name] = await call(self.remotes[name])
            except RemoteKernelsError as e:
                results[name] = e

        if len(self.order) == 1:
            await one(self.order[0])  # the common case: no task group on every request
            return results
        async with anyio.create_task_group() as tg:
            for name in self.order:
                tg.start_soon(one, name)
        return results

    @staticmethod
    def _raise_if_all_failed(results: dict[str, Any]) -> None:
        errors = [r for r in results.values() if isinstance(r, RemoteKernelsError)]
        if errors and len(errors) == len(results):
            raise errors[0]

    async def _specs_or_none(self) -> dict[str, Any] | None:
        if len(self.order) == 1:
            return None
        try:
            return await self.kernelspecs()
        except RemoteKernelsError:
            return None


async def _gather(calls: list[Awaitable[T]]) -> list[T]:
    """Await all `calls` at once; the first RemoteKernelsError, if any, is raised after."""
    results: list[Any] = [None] * len(calls)
    errors: list[RemoteKernelsError] = []

    async def one(index: int, call: Awaitable[T]) -> None:
        try:
            results[index] = await call
        except RemoteKernelsError as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(one, index, call)
    if errors:
        raise errors[0]
    return results


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _session_model(stored: StoredSession, kernel: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": stored.id, "path": stored.path, "name": stored.name, "type": stored.type,
        "kernel": kernel, "notebook": {"path": stored.path, "name": stored.name},
    }
