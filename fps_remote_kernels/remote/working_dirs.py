"""Kernels that start where their notebook is.

What each kind of remote does with the notebook's directory (measured,
tests/remote/test_working_dirs.py):
the front sends it as `path` (relative to the front's root) and the remote starts the kernel in
that directory under its own root when it exists there: jupyter_server, Kernel Gateway and
Enterprise Gateway with local kernels (jupyter_server's `cwd_for_path`), Jupyverse for the
session's directory. That is right when the remote's root mirrors the front's.
(Jupyverse and jupyter_server 2 give kernels no environment from the request at all.)

Kernels that run elsewhere (Enterprise Gateway's container and remote-host process proxies) do
not see the gateway's root: they read `KERNEL_WORKING_DIR`, the absolute directory on the
kernel host (Enterprise Gateway passes it to container kernels with EG_MIRROR_WORKING_DIRS=True).
jupyter_server's GatewayClient sends the front's own absolute path there, which is right only
when both mount the files at the same place; the front sends it only when told where its root
lives on the kernel host (`kernel_working_dir_root`), and maps the notebook's directory into it.
"""

from __future__ import annotations

import ntpath
import posixpath

from ..errors import bad_request


def relative_dir(path: str | None) -> str:
    """The notebook directory a client sent, checked: relative to the root, never leaving it."""
    if not path:
        return ""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise bad_request(f"Path {path[:200]!r} leaves the root directory")
    return "/".join(parts)


def kernel_working_dir(root: str, path: str | None) -> str:
    """`path` (relative to the front's root) as an absolute directory on the kernel host whose
    copy of the front's root is `root`."""
    relative = relative_dir(path)
    if "\\" in root or (len(root) > 1 and root[1] == ":"):  # a Windows kernel host
        return ntpath.join(root, *relative.split("/")) if relative else root
    return posixpath.join(root, relative) if relative else root
