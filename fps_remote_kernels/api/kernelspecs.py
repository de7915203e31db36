"""Kernelspecs merged over the remotes: a clashing name is prefixed with its remote (e.g.
`gpu:python3`); a pool (placement.py) offers its members' kernelspecs once; `remote:name`
always names a spec, and `member:name` pins a pool's spec to one member.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from ..errors import RemoteKernelsError, not_found
from .remotes import Remotes


class Kernelspecs(Remotes):
    async def kernelspecs(self, user: str | None = None) -> dict[str, Any]:
        """The merged kernelspecs, each with `remote` and `remote_name` for routing, its
        `offerer` (a remote, or the pool of its remotes) and the `members` that offer it
        (one remote, or the members of a pool that have it and answered); `unavailable`:
        the offerers none of whose remotes answered. With `user`, what remotes that filter
        per user (Enterprise Gateway) offer to that user."""
        # A sick remote's specs stay offered while its cached answer is fresh: placement
        # skips a sick pool member, and a start asked of a sick remote says why it failed.
        results = await self._on_each(lambda remote: remote.kernelspecs(user),
                                      lambda remote: remote.cached_kernelspecs(user))
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

    async def _specs_or_none(self) -> dict[str, Any] | None:
        if len(self.order) == 1:
            return None
        try:
            return await self.kernelspecs()
        except RemoteKernelsError:
            return None
