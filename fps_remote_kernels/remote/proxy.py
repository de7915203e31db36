"""The forward proxy between the front and a remote, for the kernel WebSocket.

httpx sends the front's REST calls through the proxy the environment names (`HTTP_PROXY`,
`HTTPS_PROXY`, `ALL_PROXY`, minus the hosts of `NO_PROXY`; lower-case forms too, which win).
The kernel WebSocket must take the same way: where the remote's name resolves only for the
proxy, a direct connection lists and starts kernels and then never connects one. A ws:// URL
is looked up as http://, wss:// as https://. The WebSocket goes through an HTTP CONNECT tunnel
(credentials in the proxy URL go as `Proxy-Authorization: Basic`), and TLS to the remote runs
inside the tunnel. Only http:// proxies tunnel here; another scheme is refused with a clear
error rather than bypassed.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# A proxy's answer to CONNECT is a status line and a few headers.
_MAX_ANSWER_BYTES = 16 * 1024


class ProxyError(OSError):
    """The proxy refused the tunnel, or is not a proxy this client can tunnel through."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    # `Basic ...` from the proxy URL's credentials, or None.
    authorization: str | None
    # The proxy as logs and errors name it: never with its credentials.
    name: str


def proxy_for(url: str) -> Proxy | None:
    """The proxy the environment names for `url` (ws://, wss://, http:// or https://), None for
    a direct connection. Raises ProxyError for a proxy scheme other than http://."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    proxies = urllib.request.getproxies_environment()
    found = proxies.get(scheme) or proxies.get("all")
    if not found or _bypassed(parts.hostname or "", proxies.get("no", "")):
        return None
    proxy = urlsplit(found if "://" in found else f"http://{found}")
    name = f"{proxy.scheme}://{proxy.hostname}:{proxy.port or 80}"
    if proxy.scheme != "http" or not proxy.hostname:
        raise ProxyError(f"the proxy {name} for the kernel WebSocket is not an http:// proxy "
                         "(set NO_PROXY for this remote, or remote_kernels.env_proxy=false)")
    authorization = None
    if proxy.username is not None:
        pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(proxy.hostname, proxy.port or 80, authorization, name)


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY names `host`: `*`, the host itself, or a domain it is in (`example.com`
    and `.example.com` both cover `a.example.com`); a port in an entry is ignored."""
    host = host.lower().strip("[]")
    for entry in no_proxy.lower().split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        if entry.startswith("[") and "]" in entry:  # [::1]:8002
            entry = entry[1:entry.index("]")]
        elif entry.count(":") == 1:
            entry = entry.split(":")[0]
        entry = entry.lstrip("*").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


async def tunnel(proxy: Proxy, host: str, port: int) -> socket.socket:
    """A connected socket to `host:port` through `proxy` (HTTP CONNECT), ready for TLS or
    plain bytes. Raises ProxyError (a refusal) or OSError (no connection to the proxy)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for the proxy {proxy.name}")
    for family, kind, protocol, _, address in infos:
        sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            break
        except OSError as e:
            sock.close()
            error = e
    else:
        raise error
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.authorization is not None:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ProxyError(f"the proxy {proxy.name} closed the connection")
            answer += chunk
            if len(answer) > _MAX_ANSWER_BYTES:
                raise ProxyError(f"the proxy {proxy.name} answered CONNECT with too much")
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("iso-8859-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or fields[1] != "200":
            raise ProxyError(f"the proxy {proxy.name} refused the tunnel to {authority}: "
                             f"{status_line[:100]!r}")
        if rest:  # nothing may come from the remote before the client speaks
            raise ProxyError(f"the proxy {proxy.name} sent data before the tunnel opened")
    except BaseException:
        sock.close()
        raise
    return sock
