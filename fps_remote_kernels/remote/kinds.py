"""What differs between the kinds of remote kernel server, kept in one place.

Measured with real servers (docs/remote-kinds.md): Jupyverse takes `?token=` and answers
with a cookie, ignoring `Authorization`; jupyter_server, Kernel Gateway and Enterprise Gateway
take `Authorization: token <t>`. Jupyverse has no `POST /api/kernels`. The gateways refuse to
list kernels and sessions unless configured to, and answer 500 to `GET /api/sessions/{id}` and
PATCH, so the front keeps sessions itself for them. Enterprise Gateway places and sizes kernels
from `KERNEL_*` variables and reads the launch timeout from `KERNEL_LAUNCH_TIMEOUT`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
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


JUPYVERSE = Kind("jupyverse", True, (401, 403), False, True, False, False,
                 handshake_checks_kernel=False)
JUPYTER_SERVER = Kind("jupyter_server", False, (401, 403), True, True, True, False)
KERNEL_GATEWAY = Kind("kernel_gateway", False, (401,), True, False, True, False, "api")
ENTERPRISE_GATEWAY = Kind("enterprise_gateway", False, (401,), True, False, True, True, "api",
                          ("authorized to start kernel", "authorized to use kernel spec"), True)

KINDS = {kind.name: kind for kind in (JUPYVERSE, JUPYTER_SERVER, KERNEL_GATEWAY,
                                      ENTERPRISE_GATEWAY)}
