"""The remote: one HTTP client, authentication to the remote, URL building."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx
import structlog

from ..config import RemoteConfig, RemoteKernelsConfig
from ..errors import (
    RemoteKernelsError,
    bad_gateway,
    connection_dropped,
    mapped_transport_errors,
    not_found,
    timed_out,
    unreachable,
    user_refused,
)
from .credentials import JUPYVERSE_AUTH_COOKIE, RemoteAuth, quiet_library_logs
from .health import Health
from .kernel_socket import HandshakeError, HandshakeRefused, NotHTTP, UpstreamConnection
from .kernel_socket import connect as connect_websocket
from .kinds import ENTERPRISE_GATEWAY, JUPYTER_SERVER, JUPYVERSE, KERNEL_GATEWAY, KINDS, Kind
from .proxy import ProxyError, proxy_for

logger = structlog.get_logger()

# Seconds an idle connection to the remote stays in the pool: under the 5 s after which
# anycorn (Jupyverse) and uvicorn close idle connections.
_KEEPALIVE_EXPIRY = 4.0


class RemoteClient:
    """Talks to the remote kernel server with the front's own credentials.

    Authentication works for both families of remotes without configuration:
    `Authorization: token <t>` is sent on every request (jupyter_server, Kernel Gateway,
    Enterprise Gateway read it; scheme, header and token source are options, see credentials.py); a
    Jupyverse remote ignores it and refuses the request, so the client logs in once with
    `?token=`, keeps the cookie the remote sets, and logs in again when the remote refuses it
    (after a restart, the remote signs cookies with a new secret). Every cookie the remote sets
    (a balancer's affinity cookie too) is kept, per remote, until it expires, and sent on REST
    requests and on the kernel WebSocket handshake; none is ever passed to the browser.
    """

    def __init__(self, remote: RemoteConfig, config: RemoteKernelsConfig) -> None:
        assert remote.url is not None
        self.remote = remote
        self.config = config  # timeouts and keepalive settings, shared by all remotes
        self.base_url = remote.url
        self.ws_base_url = remote.resolved_ws_url()
        parts = urlsplit(remote.url)
        # How the remote is named in errors and logs: never with credentials.
        self.name = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self.auth = RemoteAuth(remote)
        self._ssl_context = _ssl_context(remote)
        self._http = httpx.AsyncClient(
            base_url=remote.url,
            headers=remote.headers,
            timeout=httpx.Timeout(config.request_timeout, connect=config.connect_timeout),
            verify=self._ssl_context,
            follow_redirects=False,
            # Many browser tabs poll the same lists: keep connections warm, but not for as long
            # as servers keep them (anycorn and uvicorn close idle ones after 5 s): reusing a
            # connection the remote is closing at that moment fails the request.
            limits=httpx.Limits(max_connections=100,
                                max_keepalive_connections=0 if _through_a_proxy(remote.url,
                                                                                config) else 50,
                                keepalive_expiry=_KEEPALIVE_EXPIRY),
            # The environment's proxies (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), as the kernel
            # WebSocket honours them (proxy.py); TLS settings are our own either way.
            trust_env=config.env_proxy,
        )
        # Why the last kernel WebSocket open failed (None after one that worked): /api/status
        # says it, since REST may work where the socket does not (a proxy, a balancer).
        self.kernel_socket_problem: str | None = None
        self._login_lock = anyio.Lock()
        self._auth_generation = 0
        # None until detected (kind "auto"): see ensure_kind().
        self.kind: Kind | None = KINDS.get(remote.kind)
        self._detect_lock = anyio.Lock()
        # Told of every request to the remote: (remote name, method, path, status or None
        # when no answer came, seconds). The metrics set it.
        self.request_observer: Callable[[str, str, str, int | None, float], None] | None = None
        # What the requests find of the remote's health (health.py).
        self.health = Health(self.name)
        quiet_library_logs()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---------------------------------------------------------------- REST

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send a request to `path` (relative to the remote's base URL, already quoted).

        Transport failures become 502/503/504; a refusal of our credentials triggers one
        re-authentication and retry.
        """
        if self.kind is None:
            await self.ensure_kind()
        request_timeout = timeout or self.config.request_timeout
        for attempt in range(2):
            generation = self._auth_generation
            async with mapped_transport_errors(self.name, request_timeout):
                response = await self._send(
                    method,
                    path,
                    json=json,
                    headers=self._auth_headers(),
                    timeout=httpx.Timeout(request_timeout, connect=self.config.connect_timeout),
                    # A kernel start slower than a listing says nothing of the remote's health.
                    slow_is_sick=request_timeout <= self.config.request_timeout,
                )
            if not self._refused(response):
                return response
            if attempt == 0 and await self._reauthenticate(generation):
                continue
            break
        raise self.credentials_refused(response.status_code)

    def credentials_refused(self, status: int, where: str = "") -> RemoteKernelsError:
        """The answer when the remote refuses the front's credentials. A remote on this
        machine may be a Jupyverse that shares the front's auth directory (Jupyverse's
        default): each server then overwrites the other's token, and the right token is
        refused; the hint says so."""
        hint = "check remote_kernels.token"
        host = urlsplit(self.base_url).hostname or ""
        if host in ("localhost", "::1") or host.startswith("127."):
            hint += (" (two Jupyverse servers on one machine that share an auth directory, "
                     "Jupyverse's default, overwrite each other's token: give each its own "
                     "--set auth.directory=...)")
        return bad_gateway(self.name, f"it refused the front's credentials ({status}){where}; "
                           f"{hint}")

    async def get_json(self, path: str, *, timeout: float | None = None) -> Any:
        response = await self.request("GET", path, timeout=timeout)
        return self.json_of(response)

    def json_of(self, response: httpx.Response, *, expected: tuple[int, ...] = (200,)) -> Any:
        """The JSON body of a successful answer; anything else becomes a clear error."""
        if response.status_code not in expected:
            raise self.error_from(response)
        try:
            return response.json()
        except ValueError:
            raise bad_gateway(self.name, f"unparseable answer to {response.request.method} "
                              f"{response.request.url.path}") from None

    def error_from(self, response: httpx.Response) -> RemoteKernelsError:
        """Keep the remote's 4xx (with its message); remote 5xx becomes 502."""
        message = _remote_message(response)
        if response.status_code == 404:
            return not_found(message or "Resource")
        if (response.status_code == 403 and self.kind is not None
                and any(words in message for words in self.kind.user_refusal)):
            return user_refused(self.name, message)
        if 400 <= response.status_code < 500:
            return RemoteKernelsError(response.status_code, message or response.reason_phrase,
                                      response.reason_phrase)
        detail = f"{response.status_code} {response.reason_phrase}"
        if message:
            detail += f": {message}"
        return bad_gateway(self.name, detail)

    async def ensure_kind(self) -> Kind:
        """The kind of the remote, detected from its answers on first use when configured
        as "auto" (and logged), retried later if the remote cannot be reached now."""
        if self.kind is not None:
            return self.kind
        async with self._detect_lock:
            if self.kind is None:
                self.kind = await self._detect_kind()
                logger.info("Detected the kind of the remote", remote=self.name,
                            kind=self.kind.name)
        return self.kind

    async def _detect_kind(self) -> Kind:
        # jupyter_server and the gateways answer GET /api with their version; Enterprise
        # Gateway adds gateway_version; Kernel Gateway has no /api/status. Jupyverse has no
        # /api at all, and logs us in with ?token=.
        response = await self._get_plain("api")
        body = _json_or_none(response) if response.status_code == 200 else None
        if isinstance(body, dict) and "version" in body:
            if "gateway_version" in body:
                return ENTERPRISE_GATEWAY
            status = await self._get_plain("api/status")
            return KERNEL_GATEWAY if status.status_code == 404 else JUPYTER_SERVER
        if response.status_code == 401:
            raise self.credentials_refused(401)
        return JUPYVERSE

    async def _get_plain(self, path: str) -> httpx.Response:
        async with mapped_transport_errors(self.name, self.config.request_timeout):
            return await self._send("GET", path, headers=self._auth_headers())

    async def probe(self) -> None:
        """Ask the kind's cheap status path, bounded by connect_timeout: whether the remote
        answers at all (any answer, even a refusal of the front's credentials, but not a
        balancer's 502-504). `_send` reports it to the remote's health."""
        path = self.kind.status_path if self.kind is not None else "api"
        async with mapped_transport_errors(self.name, self.config.connect_timeout):
            response = await self._send("GET", path, headers=self._auth_headers(),
                                        timeout=httpx.Timeout(self.config.connect_timeout))
        if response.status_code in (502, 503, 504):
            raise self.error_from(response)

    async def _send(self, method: str, path: str, *, slow_is_sick: bool = True,
                    **kwargs: Any) -> httpx.Response:
        """One HTTP request; a safe one (GET, HEAD) is sent again, once, when the connection
        drops before the answer: a kept-alive connection the remote closed while it sat in
        the pool fails that way, and a browser retries then too. Other methods are not
        repeated: the remote may have acted on them. No answer makes the remote sick
        (health.py); with `slow_is_sick` false, a read timeout does not."""
        started, status = time.perf_counter(), None
        try:
            try:
                response = await self._http.request(method, path, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if method not in ("GET", "HEAD") or not connection_dropped(e):
                    raise
                logger.debug("Connection to the remote dropped; sending again",
                             remote=self.name, method=method)
                response = await self._http.request(method, path, **kwargs)
            status = response.status_code
            self.health.answered(status)
            return response
        except httpx.TransportError as e:
            if sickening(e, slow_is_sick):
                self.health.failed(f"{type(e).__name__} on {method} {route_name(path)}")
            raise
        finally:
            if self.request_observer is not None:
                self.request_observer(self.remote.name, method, path, status,
                                      time.perf_counter() - started)

    def _refused(self, response: httpx.Response) -> bool:
        statuses = self.kind.refusal_statuses if self.kind is not None else (401, 403)
        if response.status_code in statuses:
            return True
        # Jupyverse answers an unauthenticated request with 403, or 307 to its login page.
        return response.is_redirect and "login" in response.headers.get("location", "")

    def _may_log_in(self) -> bool:
        return self.kind is None or self.kind.cookie_login

    def _auth_headers(self) -> dict[str, str]:
        return self.auth.headers()

    async def _reauthenticate(self, failed_generation: int) -> bool:
        """After a refusal: re-read a rotated token file, log in again to a Jupyverse remote.
        Whether the request is worth sending once more."""
        rotated = self.auth.reload()
        if self.auth.token is not None and self._may_log_in():
            await self._login(failed_generation)
            return True
        return rotated

    async def _login(self, failed_generation: int) -> None:
        """Get a fresh Jupyverse auth cookie; concurrent callers share one login."""
        async with self._login_lock:
            if self._auth_generation != failed_generation:
                return  # another request logged in meanwhile
            # Only the stale session cookie: a balancer's affinity cookie must stay.
            self._http.cookies.delete(JUPYVERSE_AUTH_COOKIE)
            async with mapped_transport_errors(self.name, self.config.request_timeout):
                response = await self._send(
                    "GET", "api/status", params={"token": self.auth.token},
                    headers=self._auth_headers(),
                )
            self._auth_generation += 1
            if response.status_code == 200 and self._http.cookies.get(JUPYVERSE_AUTH_COOKIE):
                logger.info("Authenticated to the remote", remote=self.name)
            else:
                logger.warning("The remote refused the front's token", remote=self.name,
                               status=response.status_code)

    # ---------------------------------------------------------------- WebSocket

    def _cookie_header(self, ws_url: str) -> str | None:
        """The Cookie header the remote's cookies give for this URL, as for a REST request
        (domain, path, secure, expiry: the cookie jar's own rules, as GatewayClient's
        accept_cookies honours expiry)."""
        http_url = "http" + ws_url[len("ws"):]
        request = urllib.request.Request(http_url)
        self._http.cookies.jar.add_cookie_header(request)
        return request.get_header("Cookie")

    async def connect_channels(
        self, kernel_id: str, session_id: str, subprotocols: list[str]
    ) -> UpstreamConnection:
        """Open the upstream kernel WebSocket, offering the client's subprotocols."""
        started, status = time.perf_counter(), None
        try:
            upstream = await self._connect_channels(kernel_id, session_id, subprotocols)
            status = 101
            return upstream
        finally:
            if self.request_observer is not None:
                self.request_observer(self.remote.name, "GET",
                                      f"api/kernels/{kernel_id}/channels", status,
                                      time.perf_counter() - started)

    async def _connect_channels(
        self, kernel_id: str, session_id: str, subprotocols: list[str]
    ) -> UpstreamConnection:
        if self.kind is None:
            await self.ensure_kind()
        url = (f"{self.ws_base_url}api/kernels/{quote(kernel_id, safe='')}/channels"
               f"?session_id={quote(session_id, safe='')}")
        try:
            connection = await self._open_channels(url, subprotocols, kernel_id)
        except RemoteKernelsError as e:
            if e.status >= 500:
                self.kernel_socket_problem = e.message
            raise
        self.kernel_socket_problem = None
        return connection

    async def _open_channels(self, url: str, subprotocols: list[str], kernel_id: str
                             ) -> UpstreamConnection:
        try:
            proxy = proxy_for(url) if self.config.env_proxy else None
        except ProxyError as e:
            raise unreachable(self.name, str(e)) from None
        for attempt in range(2):
            generation = self._auth_generation
            headers = {**self.remote.headers, **self._auth_headers()}
            cookie = self._cookie_header(url)
            if cookie:
                headers["Cookie"] = cookie
            try:
                # Real outputs can be tens of MB: no per-message cap on what the kernel sends
                # (memory grows only as the data arrives). The bridge forwards each message
                # at once: read ahead by two messages only, so a slow client holds the remote
                # back instead of growing our memory.
                return await connect_websocket(
                    url,
                    subprotocols=subprotocols,
                    headers=headers,
                    open_timeout=self.config.connect_timeout,
                    ping_interval=self.config.ping_interval,
                    ping_timeout=self.config.ping_timeout,
                    close_timeout=2,
                    max_queue=2,
                    ssl=self._ssl_context if url.startswith("wss:") else None,
                    proxy=proxy,
                )
            except HandshakeRefused as e:
                status = e.status
                if (status in (401, 403) and attempt == 0
                        and await self._reauthenticate(generation)):
                    continue
                if status == 404:
                    raise not_found(f"Kernel {kernel_id}") from None
                if status in (401, 403):
                    raise self.credentials_refused(status, " on the kernel WebSocket") from None
                raise bad_gateway(self.name, f"kernel WebSocket handshake answered {status}"
                                  ) from None
            except TimeoutError:
                raise timed_out(self.name, self.config.connect_timeout) from None
            except NotHTTP:
                raise bad_gateway(self.name, "kernel WebSocket handshake answered something "
                                  "that is not HTTP") from None
            except (OSError, HandshakeError) as e:
                raise unreachable(self.name, str(e) or type(e).__name__) from None
        raise AssertionError("unreachable")


def _through_a_proxy(url: str, config: RemoteKernelsConfig) -> bool:
    """Whether plain-HTTP requests to `url` go through the environment's forward proxy. Such
    a connection is not kept for the next request: common proxies (tinyproxy) close it after
    each answer without saying so, and a request sent on it as it closes fails unanswered,
    which the front may not repeat for a POST."""
    if not config.env_proxy or not url.startswith("http:"):
        return False
    try:
        return proxy_for(url) is not None
    except ProxyError:
        return False


def sickening(e: httpx.TransportError, slow_is_sick: bool) -> bool:
    """Whether a transport failure says the remote is sick: refused, timed out, dropped;
    not an answer that is not HTTP (garbage is answered 502, the remote is there)."""
    if isinstance(e, httpx.ReadTimeout):
        return slow_is_sick
    if isinstance(e, httpx.RemoteProtocolError):
        return connection_dropped(e)
    return True


def route_name(path: str) -> str:
    """A request path without its query (which may hold the token)."""
    return path.split("?", 1)[0]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _remote_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        for key in ("message", "detail", "reason"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _ssl_context(config: RemoteConfig) -> ssl.SSLContext:
    if config.verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(config.verify, str):
        context = ssl.create_default_context(cafile=config.verify)
    else:
        context = ssl.create_default_context()
    if config.client_cert:
        context.load_cert_chain(config.client_cert, config.client_key)
    return context
