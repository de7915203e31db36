"""What differs between the kinds of remote kernel server, kept in one place.

Measured with real servers (docs/dev/remote-kinds.md): Jupyverse takes `?token=` and answers
with a cookie, ignoring `Authorization`; jupyter_server, Kernel Gateway and Enterprise Gateway
take `Authorization: token <t>`. Jupyverse has no `POST /api/kernels`. The gateways refuse to
list kernels and sessions unless configured to, and answer 500 to `GET /api/sessions/{id}` and
PATCH, so the front keeps sessions itself for them. Enterprise Gateway places and sizes kernels
from `KERNEL_*` variables and reads the launch timeout from `KERNEL_LAUNCH_TIMEOUT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args


@dataclass(frozen=True, kw_only=True)
class Kind:
    name: str
    # Jupyverse: log in with ?token= and keep the cookie; header auth is ignored.
    cookie_login: bool
    # Status codes that mean "your credentials were refused" (gateways use 403 for
    # "listing disabled", not for bad credentials).
    refusal_statuses: tuple[int, ...]
    # POST /api/kernels exists (else kernels start through a hidden remote session).
    post_kernels: bool
    # Its session API is complete enough to keep sessions on the remote.
    remote_sessions: bool
    # POST /api/kernels passes `env` on to the kernel (KERNEL_* and allowlisted names).
    kernel_env: bool
    # Told how long the front waits for a kernel start, as KERNEL_LAUNCH_TIMEOUT.
    launch_timeout_env: bool
    # A cheap authenticated GET that tells whether the remote is up.
    status_path: str = "api/status"
    # Words of its 403 when it refuses the KERNEL_USERNAME the front sent (Enterprise Gateway:
    # "User 'root' is not authorized to start kernel ..."; root is refused by default).
    user_refusal: tuple[str, ...] = ()
    # GET /api/kernelspecs?user=<name> lists only what that user may start (Enterprise
    # Gateway's authorized_users / unauthorized_users, per kernelspec or global).
    kernelspecs_per_user: bool = False
    # Its kernel WebSocket handshake answers 404 for an unknown kernel (jupyter_server's
    # `pre_get`). Jupyverse accepts it and then says nothing, so the front checks first.
    handshake_checks_kernel: bool = True


JUPYVERSE = Kind(name="jupyverse", cookie_login=True, refusal_statuses=(401, 403),
                 post_kernels=False, remote_sessions=True, kernel_env=False,
                 launch_timeout_env=False, handshake_checks_kernel=False)
JUPYTER_SERVER = Kind(name="jupyter_server", cookie_login=False, refusal_statuses=(401, 403),
                      post_kernels=True, remote_sessions=True, kernel_env=True,
                      launch_timeout_env=False)
KERNEL_GATEWAY = Kind(name="kernel_gateway", cookie_login=False, refusal_statuses=(401,),
                      post_kernels=True, remote_sessions=False, kernel_env=True,
                      launch_timeout_env=False, status_path="api")
ENTERPRISE_GATEWAY = Kind(name="enterprise_gateway", cookie_login=False, refusal_statuses=(401,),
                          post_kernels=True, remote_sessions=False, kernel_env=True,
                          launch_timeout_env=True, status_path="api",
                          user_refusal=("authorized to start kernel",
                                        "authorized to use kernel spec"),
                          kernelspecs_per_user=True)

KINDS = {kind.name: kind for kind in (JUPYVERSE, JUPYTER_SERVER, KERNEL_GATEWAY,
                                      ENTERPRISE_GATEWAY)}
# What `remote_kernels.kind` accepts: a kind, or `auto` (asked of the remote at first use).
KindName = Literal["auto", "jupyverse", "jupyter_server", "kernel_gateway", "enterprise_gateway"]
KIND_NAMES: tuple[str, ...] = get_args(KindName)
assert set(KIND_NAMES) == {"auto", *KINDS}, "KindName names every kind"
