"""One place that turns remote failures into HTTP answers and WebSocket close codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi.responses import JSONResponse


class RemoteKernelsError(Exception):
    """An error answered to the client as jupyter_server does: JSON `{message, reason}`."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"message": self.message, "reason": self.reason},
            status_code=self.status,
        )


def not_found(what: str) -> RemoteKernelsError:
    return RemoteKernelsError(404, f"{what} not found", "Not Found")


def user_refused(remote: str, message: str) -> RemoteKernelsError:
    # The gateway's own words say "Ensure KERNEL_USERNAME is set", which the user cannot do:
    # name the front's option that sets it.
    return RemoteKernelsError(
        403, f"{message} (remote {remote} refused the kernel user: set the front's "
        "remote_kernels.kernel_username to a user it allows)", "Forbidden")


def bad_request(message: str) -> RemoteKernelsError:
    return RemoteKernelsError(400, message, "Bad Request")


def unreachable(remote: str, why: str) -> RemoteKernelsError:
    # 503 rather than 502: JupyterLab keeps polling a kernel on 503 instead of declaring it dead.
    return RemoteKernelsError(503, f"Remote kernel server {remote} is unreachable: {why}",
                              "Service Unavailable")


def pool_unavailable(pool: str, kernel_name: str, failures: list[str]) -> RemoteKernelsError:
    # 503 as for one unreachable remote: the user may try again later.
    why = "; ".join(failures) if failures else "no member offers it now"
    return RemoteKernelsError(
        503, f"No member of pool {pool} could start a '{kernel_name}' kernel: {why}",
        "Service Unavailable")


def timed_out(remote: str, seconds: float | None) -> RemoteKernelsError:
    limit = f" within {seconds:g} s" if seconds else ""
    return RemoteKernelsError(504, f"Remote kernel server {remote} did not answer{limit}",
                              "Gateway Timeout")


def as_unavailable(error: RemoteKernelsError) -> RemoteKernelsError:
    """For `GET /api/kernels/{id}`, which JupyterLab asks to decide whether a kernel lives:
    it reads 504 as "kernel died" but keeps polling on 503, so a remote that is only slow
    must not kill the user's kernel in the UI."""
    if error.status != 504:
        return error
    return RemoteKernelsError(503, error.message, "Service Unavailable")


def bad_gateway(remote: str, why: str) -> RemoteKernelsError:
    return RemoteKernelsError(502, f"Remote kernel server {remote} failed: {why}", "Bad Gateway")


@asynccontextmanager
async def mapped_transport_errors(remote: str, timeout: float | None) -> AsyncIterator[None]:
    """Map httpx's transport errors to 502/503/504; messages name the remote, never the token."""
    try:
        yield
    except httpx.TimeoutException as e:
        if isinstance(e, httpx.ConnectTimeout):
            raise unreachable(remote, "connection timed out") from None
        raise timed_out(remote, timeout) from None
    except httpx.ConnectError as e:
        raise unreachable(remote, _describe(e)) from None
    except httpx.RemoteProtocolError as e:
        if not connection_dropped(e):
            raise bad_gateway(remote, f"invalid answer ({_describe(e)})") from None
        raise unreachable(remote, f"connection lost ({_describe(e)})") from None
    except (httpx.ReadError, httpx.WriteError) as e:
        # A dropped connection (network cut, remote restarting) is 503, not 502: on 503
        # JupyterLab keeps polling the kernel; on 502 it declares the kernel dead.
        raise unreachable(remote, f"connection lost ({_describe(e)})") from None
    except httpx.TransportError as e:
        raise unreachable(remote, _describe(e)) from None


def connection_dropped(e: httpx.TransportError) -> bool:
    """Whether the connection was closed or reset before or during the answer (rather than
    the remote answering something that is not HTTP, which is garbage: 502)."""
    if isinstance(e, (httpx.ReadError, httpx.WriteError)):
        return True
    # httpcore's and h11's words for a connection closed before or during the answer.
    text = str(e).lower()
    return "disconnected" in text or "closed connection" in text


def _describe(e: Exception) -> str:
    # httpx messages carry no URL (the URL, which may hold a token, is on e.request).
    text = str(e).strip()
    return text or type(e).__name__


# WebSocket close codes that must not be sent on the wire (RFC 6455 §7.4.1), or that an
# endpoint may not use; jupyter_server-like clients treat 1011 as "server error".
_RESERVED_CLOSE_CODES = {1004, 1005, 1006, 1015}


def close_code_for_client(code: int | None) -> int:
    if code is None or code in _RESERVED_CLOSE_CODES or not (1000 <= code <= 4999):
        return 1011
    return code


# ---- server-side execution
def execution_unavailable() -> RemoteKernelsError:
    # JupyterLab's server-side cell executor only reads response.ok: the message is for people.
    return RemoteKernelsError(
        501, "Server-side execution needs the collaboration plugins on the front: "
        "pip install \"jupyverse[jupyterlab,auth,collaboration]\" (and do not --disable yjs, "
        "yrooms, ystore_sqlite or file_id)", "Not Implemented")


def kernel_died(kernel_id: str) -> RemoteKernelsError:
    return RemoteKernelsError(409, f"Kernel {kernel_id} died while a cell ran: restart it to "
                              "run cells again", "Conflict")


def queue_full(kernel_id: str, limit: int) -> RemoteKernelsError:
    return RemoteKernelsError(
        429, f"Kernel {kernel_id} already has {limit} cells queued or running for server-side "
        "execution (remote_kernels.execution_queue_limit): wait for some to finish",
        "Too Many Requests")
