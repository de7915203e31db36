"""Measure how each kind of remote kernel server answers: Jupyverse, jupyter_server, Kernel
Gateway, Enterprise Gateway.

Starts each kind with tests.support.servers, sends every route of the kernels, kernelspecs and
sessions API with each way of passing the token, opens kernel WebSockets in several ways, checks
which environment variables reach a kernel, and prints markdown (docs/dev/remote-kinds.md is its
output):

    .venv/bin/python tests/support/remote_kinds_probe.py [KIND ...] > docs/dev/remote-kinds.md

Not a test: it asserts nothing, it reports. Every request and wait is bounded.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.kernel_client import V1, KernelConnection, make_message  # noqa: E402
from tests.support.servers import (  # noqa: E402
    Server,
    enterprise_gateway_remote,
    jupyter_server_remote,
    kernel_gateway_remote,
    remote_server,
)

ENV_SENT = {"KERNEL_USERNAME": "alice", "KERNEL_FOO": "x", "OTHER": "y"}
# Set in the server's own environment: does the server pass its environment to kernels?
SERVER_CANARY = "PROBE_SERVER_ONLY"
ENV_CODE = (
    "import os, json; print(json.dumps({'seen': {k: os.environ.get(k) for k in %r}, "
    "'PATH set': 'PATH' in os.environ, 'HOME set': 'HOME' in os.environ, "
    "'KERNEL_/EG_/KG_/JPY_ names': sorted(k for k in os.environ "
    "if k.startswith(('KERNEL_', 'EG_', 'KG_', 'JPY_'))), 'variables': len(os.environ)}))"
    % [*ENV_SENT, SERVER_CANARY]
)
UNKNOWN = "00000000-0000-4000-8000-000000000000"
REQUEST_TIMEOUT = 90


ROWS = [
    *(f"GET {path}" for path in (
        "/api", "/api/status", "/api/kernelspecs", "/api/kernelspecs/python3",
        "/api/kernelspecs/nope", "/kernelspecs/python3/logo-64x64.png", "/api/kernels")),
    "POST /api/kernels {name, env}", "POST /api/kernels {name: unknown}",
    "POST /api/kernels {} (default spec)", "GET /api/kernels/{id}", "GET /api/kernels/{unknown}",
    "POST /api/kernels/{id}/interrupt", "POST /api/kernels/{unknown}/interrupt",
    "POST /api/kernels/{id}/restart", "POST /api/kernels/{unknown}/restart",
    "DELETE /api/kernels/{id}", "DELETE /api/kernels/{id} again",
    "GET /api/sessions", "POST /api/sessions", "GET /api/sessions/{id}",
    "PATCH /api/sessions/{id} {id, path, name}", "DELETE /api/sessions/{id}",
    "DELETE /api/sessions/{id} again", "GET /api/kernels/{session's kernel} after DELETE session",
    "GET /api/sessions/{unknown}", "DELETE /api/sessions/{unknown}",
]


@dataclass
class Variant:
    label: str
    start: Callable[[Path], Server]
    modes: tuple[str, ...] = ("header", "query", "bearer", "none")
    note: str = ""


VARIANTS = {
    "jupyverse": Variant("Jupyverse (fps-kernels, auth token mode)", remote_server),
    "jupyter_server": Variant("jupyter_server 2.21", jupyter_server_remote),
    "kernel_gateway": Variant("Kernel Gateway 3.0.1 (defaults)", kernel_gateway_remote),
    "kernel_gateway_list": Variant(
        "Kernel Gateway 3.0.1 with list_kernels and env_whitelist=['OTHER']",
        lambda wd: kernel_gateway_remote(wd, list_kernels=True, env_whitelist=["OTHER"]),
        modes=("header",),
    ),
    "enterprise_gateway": Variant("Enterprise Gateway 3.3.0 (defaults, local kernels)",
                                  enterprise_gateway_remote),
    "enterprise_gateway_list": Variant(
        "Enterprise Gateway 3.3.0 with list_kernels and client_envs=['OTHER']",
        lambda wd: enterprise_gateway_remote(wd, list_kernels=True, client_envs=["OTHER"]),
        modes=("header",),
    ),
}


def short(response: httpx.Response | None, error: str = "") -> str:
    if response is None:
        return f"error: {error}"[:90]
    ctype = response.headers.get("content-type", "")
    if "json" in ctype or ctype.startswith("text/"):
        body = response.text.strip().replace("\n", " ")
    else:
        body = f"<{len(response.content)} bytes {ctype}>"
    body = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", body)
    body = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z?(\+00:00)?", "<date>", body)
    if len(body) > 110:
        body = body[:107] + "..."
    location = response.headers.get("location")
    if location and response.status_code in (201, 301, 302, 303, 307, 308):
        location = re.sub(r"[0-9a-f-]{36}", "<id>", location)
        body = f"(Location {location}) {body}"
    return f"**{response.status_code}** {body}".replace("|", "\\|")


@dataclass
class Probe:
    server: Server
    variant: Variant
    out: list[str] = field(default_factory=list)
    cookie: str = ""  # Jupyverse's auth cookie, for set-up requests

    # --- auth ---------------------------------------------------------------------------
    def auth(self, mode: str) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters that pass the token in `mode`."""
        token = self.server.token
        if mode == "header":
            return {"Authorization": f"token {token}"}, {}
        if mode == "bearer":
            return {"Authorization": f"Bearer {token}"}, {}
        if mode == "query":
            return {}, {"token": token}
        if mode == "setup":  # whatever works best, for setting up and cleaning up
            if self.server.kind == "jupyverse":
                return {"Cookie": self.cookie}, {}
            return {"Authorization": f"token {token}"}, {}
        return {}, {}

    async def call(self, method: str, path: str, mode: str, body: Any = None
                   ) -> tuple[httpx.Response | None, str]:
        headers, params = self.auth(mode)
        # A fresh client each time: a cookie set by one request must not authenticate the next.
        async with httpx.AsyncClient(base_url=self.server.url, timeout=REQUEST_TIMEOUT) as c:
            try:
                response = await c.request(method, path, headers=headers, params=params,
                                           json=body)
                return response, ""
            except httpx.HTTPError as e:
                return None, f"{type(e).__name__} {e}"

    async def login(self) -> None:
        if self.server.kind != "jupyverse":
            return
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as c:
            await c.get("/api/status", params={"token": self.server.token})
            self.cookie = f"fastapiusersauth={c.cookies['fastapiusersauth']}"

    # --- set-up helpers -----------------------------------------------------------------
    async def new_kernel(self) -> str | None:
        """A kernel started with the set-up auth (through a session on Jupyverse)."""
        r, _ = await self.call("POST", "/api/kernels", "setup", {"name": "python3"})
        if r is not None and r.status_code in (200, 201):
            return str(r.json()["id"])
        r, _ = await self.call("POST", "/api/sessions", "setup", session_body())
        if r is not None and r.status_code in (200, 201):
            return str(r.json()["kernel"]["id"])
        return None

    async def cleanup(self) -> None:
        r, _ = await self.call("GET", "/api/sessions", "setup")
        if r is not None and r.status_code == 200 and isinstance(r.json(), list):
            for s in r.json():
                await self.call("DELETE", f"/api/sessions/{s['id']}", "setup")

    # --- REST ---------------------------------------------------------------------------
    async def rest(self) -> None:
        modes = self.variant.modes
        # In the order of a run where everything succeeds, whichever mode answers first.
        rows: dict[str, dict[str, str]] = {row: {} for row in ROWS}

        def put(row: str, mode: str, text: str) -> None:
            rows.setdefault(row, {})[mode] = text

        for mode in modes:
            for path in ("/api", "/api/status", "/api/kernelspecs", "/api/kernelspecs/python3",
                         "/api/kernelspecs/nope", "/kernelspecs/python3/logo-64x64.png",
                         "/api/kernels"):
                put(f"GET {path}", mode, short(*await self.call("GET", path, mode)))

            r, err = await self.call("POST", "/api/kernels", mode,
                                     {"name": "python3", "env": ENV_SENT})
            put("POST /api/kernels {name, env}", mode, short(r, err))
            kid = str(r.json()["id"]) if r is not None and r.status_code in (200, 201) else None
            made_here = kid is not None
            kid = kid or await self.new_kernel()
            if kid is None:
                put("(no kernel could be started: later rows skipped)", mode, "-")
                continue
            r, err = await self.call("POST", "/api/kernels", mode, {"name": "nope"})
            put("POST /api/kernels {name: unknown}", mode, short(r, err))
            r, err = await self.call("POST", "/api/kernels", mode, {})
            put("POST /api/kernels {} (default spec)", mode, short(r, err))
            if r is not None and r.status_code in (200, 201):
                await self.call("DELETE", f"/api/kernels/{r.json()['id']}", "setup")
            put("GET /api/kernels/{id}", mode,
                short(*await self.call("GET", f"/api/kernels/{kid}", mode)))
            put("GET /api/kernels/{unknown}", mode,
                short(*await self.call("GET", f"/api/kernels/{UNKNOWN}", mode)))
            put("POST /api/kernels/{id}/interrupt", mode,
                short(*await self.call("POST", f"/api/kernels/{kid}/interrupt", mode)))
            put("POST /api/kernels/{unknown}/interrupt", mode,
                short(*await self.call("POST", f"/api/kernels/{UNKNOWN}/interrupt", mode)))
            put("POST /api/kernels/{id}/restart", mode,
                short(*await self.call("POST", f"/api/kernels/{kid}/restart", mode)))
            put("POST /api/kernels/{unknown}/restart", mode,
                short(*await self.call("POST", f"/api/kernels/{UNKNOWN}/restart", mode)))
            put("DELETE /api/kernels/{id}", mode,
                short(*await self.call("DELETE", f"/api/kernels/{kid}", mode)))
            put("DELETE /api/kernels/{id} again", mode,
                short(*await self.call("DELETE", f"/api/kernels/{kid}", mode)))
            if not made_here:
                await self.call("DELETE", f"/api/kernels/{kid}", "setup")

            put("GET /api/sessions", mode, short(*await self.call("GET", "/api/sessions", mode)))
            r, err = await self.call("POST", "/api/sessions", mode, session_body())
            put("POST /api/sessions", mode, short(r, err))
            sid = str(r.json()["id"]) if r is not None and r.status_code in (200, 201) else None
            if sid is not None:
                put("GET /api/sessions/{id}", mode,
                    short(*await self.call("GET", f"/api/sessions/{sid}", mode)))
                put("PATCH /api/sessions/{id} {id, path, name}", mode, short(*await self.call(
                    "PATCH", f"/api/sessions/{sid}", mode,
                    {"id": sid, "path": "renamed.ipynb", "name": "renamed.ipynb"})))
                put("DELETE /api/sessions/{id}", mode,
                    short(*await self.call("DELETE", f"/api/sessions/{sid}", mode)))
                put("DELETE /api/sessions/{id} again", mode,
                    short(*await self.call("DELETE", f"/api/sessions/{sid}", mode)))
                kernel_id = r.json()["kernel"]["id"] if r is not None else None
                if kernel_id:
                    # Does deleting a session end its kernel?
                    k, _ = await self.call("GET", f"/api/kernels/{kernel_id}", "setup")
                    put("GET /api/kernels/{session's kernel} after DELETE session", mode,
                        short(k))
                    await self.call("DELETE", f"/api/kernels/{kernel_id}", "setup")
            put("GET /api/sessions/{unknown}", mode,
                short(*await self.call("GET", f"/api/sessions/{UNKNOWN}", mode)))
            put("DELETE /api/sessions/{unknown}", mode,
                short(*await self.call("DELETE", f"/api/sessions/{UNKNOWN}", mode)))

        self.out.append("### REST\n")
        names = {"header": "`Authorization: token <t>`", "query": "`?token=<t>`",
                 "bearer": "`Authorization: Bearer <t>`", "none": "no credentials"}
        self.out.append("| route | " + " | ".join(names[m] for m in modes) + " |")
        self.out.append("|---|" + "---|" * len(modes))
        for row, by_mode in rows.items():
            if not by_mode:
                continue
            self.out.append(f"| {row} | " + " | ".join(by_mode.get(m, "") for m in modes) + " |")
        self.out.append("")

    # --- detection ----------------------------------------------------------------------
    async def detection(self) -> None:
        self.out.append("### What identifies it\n")
        for path, mode in (("/api", "none"), ("/api", "setup"), ("/api/status", "setup"),
                           ("/", "none")):
            r, err = await self.call("GET", path, mode)
            if r is None:
                self.out.append(f"- `GET {path}` ({mode}): {err}")
                continue
            headers = {k: v for k, v in r.headers.items()
                       if k.lower() not in ("date", "content-length", "etag", "set-cookie")}
            body = r.text if len(r.text) < 160 else r.text[:160] + "..."
            body = body.replace("\n", " ").replace("`", "'")
            self.out.append(f"- `GET {path}` ({'no credentials' if mode == 'none' else 'token'}):"
                            f" {r.status_code}, body `{body.strip()}`, headers `{headers}`")
        self.out.append("")

    # --- environment --------------------------------------------------------------------
    async def environment(self) -> None:
        self.out.append("### Environment of a kernel\n")
        self.out.append(f"Started with `POST /api/kernels {{\"name\": \"python3\", \"env\": "
                        f"{json.dumps(ENV_SENT)}}}` (Jupyverse: `POST /api/sessions`); the "
                        f"server itself runs with `{SERVER_CANARY}=1` in its environment.\n")
        for label, body in (("with `env`", {"name": "python3", "env": ENV_SENT}),
                            ("without `env`", {"name": "python3"})):
            r, err = await self.call("POST", "/api/kernels", "setup", body)
            kid = str(r.json()["id"]) if r is not None and r.status_code in (200, 201) else None
            if kid is None and self.server.kind == "jupyverse":
                label = "through `POST /api/sessions`"
                kid = await self.new_kernel()
            if kid is None:
                self.out.append(f"- {label}: no kernel: {short(r, err)}")
                continue
            try:
                result = await self.run(kid, ENV_CODE)
                self.out.append(f"- {label}, the kernel sees: `{result.strip()}`")
            except Exception as e:  # report, do not stop the probe
                self.out.append(f"- {label}: could not run code: {type(e).__name__} {e}")
            await self.call("DELETE", f"/api/kernels/{kid}", "setup")
            await self.cleanup()
            if self.server.kind == "jupyverse":
                break

        # Kernel Gateway and Enterprise Gateway check the values of `env`.
        for label, env in (("non-string value", {"KERNEL_N": 1}),
                           ("value of 5000 characters", {"KERNEL_LONG": "x" * 5000}),
                           ("value with $ ` and newline", {"KERNEL_SH": "a$b`c\nd"}),
                           ("env not an object", ["KERNEL_X"])):
            r, err = await self.call("POST", "/api/kernels", "setup",
                                     {"name": "python3", "env": env})
            self.out.append(f"- `POST /api/kernels` with {label}: {short(r, err)}")
            if r is not None and r.status_code in (200, 201):
                await self.call("DELETE", f"/api/kernels/{r.json()['id']}", "setup")
        self.out.append("")

    async def run(self, kernel_id: str, code: str) -> str:
        headers, params = self.auth("setup")
        url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{kernel_id}/channels"
        with anyio.fail_after(120):
            conn = await KernelConnection.open(
                url, cookie=headers.get("Cookie"), open_timeout=30,
                additional_headers={k: v for k, v in headers.items() if k != "Cookie"})
            try:
                await conn.request("kernel_info_request", {})
                await conn.wait_for("kernel_info_reply", timeout=60)
                execution = await conn.execute(code, timeout=60)
                return execution.stdout
            finally:
                await conn.close()

    # --- WebSocket ----------------------------------------------------------------------
    async def websocket(self) -> None:
        self.out.append("### Kernel WebSocket handshake\n")
        kid = await self.new_kernel()
        if kid is None:
            self.out.append("- no kernel could be started\n")
            return
        base = f"ws://127.0.0.1:{self.server.port}/api/kernels/{kid}/channels"
        token = self.server.token
        setup_headers, _ = self.auth("setup")
        cases: list[tuple[str, str, dict[str, str], list[str] | None]] = [
            ("set-up auth, session_id, offers v1", f"{base}?session_id={uuid.uuid4().hex}",
             setup_headers, [V1]),
            ("set-up auth, session_id, offers nothing", f"{base}?session_id={uuid.uuid4().hex}",
             setup_headers, None),
            ("set-up auth, no session_id, offers v1", base, setup_headers, [V1]),
            ("set-up auth, offers only an unknown subprotocol",
             f"{base}?session_id={uuid.uuid4().hex}", setup_headers, ["x.unknown"]),
            ("`Authorization: token`", f"{base}?session_id={uuid.uuid4().hex}",
             {"Authorization": f"token {token}"}, [V1]),
            ("`?token=`", f"{base}?session_id={uuid.uuid4().hex}&token={token}", {}, [V1]),
            ("`Authorization: Bearer`", f"{base}?session_id={uuid.uuid4().hex}",
             {"Authorization": f"Bearer {token}"}, [V1]),
            ("no credentials", f"{base}?session_id={uuid.uuid4().hex}", {}, [V1]),
            ("set-up auth, unknown kernel id",
             f"ws://127.0.0.1:{self.server.port}/api/kernels/{UNKNOWN}/channels"
             f"?session_id={uuid.uuid4().hex}", setup_headers, [V1]),
        ]
        self.out.append("| connection | result |")
        self.out.append("|---|---|")
        for label, url, headers, protocols in cases:
            self.out.append(f"| {label} | {await ws_attempt(url, headers, protocols)} |")
        self.out.append("")
        await self.call("DELETE", f"/api/kernels/{kid}", "setup")
        await self.cleanup()


def session_body() -> dict[str, Any]:
    name = f"probe-{uuid.uuid4().hex[:8]}.ipynb"
    return {"path": name, "type": "notebook", "name": name, "kernel": {"name": "python3"}}


async def ws_attempt(url: str, headers: dict[str, str], protocols: list[str] | None) -> str:
    """Handshake, then a kernel_info_request: what happened, in a few words."""
    try:
        with anyio.fail_after(30):
            ws = await websockets.connect(
                url, additional_headers=headers, open_timeout=20, max_size=None,
                subprotocols=[websockets.Subprotocol(p) for p in protocols] if protocols
                else None)
    except websockets.InvalidStatus as e:
        return f"handshake refused: HTTP {e.response.status_code}"
    except Exception as e:  # report what failed
        return f"handshake failed: {type(e).__name__} {e}"[:120]
    protocol = ws.subprotocol
    result = f"101, subprotocol `{protocol}`"
    # Jupyverse sends replies to the socket whose session_id is the request's header.session.
    match = re.search(r"session_id=([0-9a-f]+)", url)
    conn = KernelConnection(ws, match.group(1) if match else uuid.uuid4().hex)
    try:
        msg = make_message("kernel_info_request", {}, conn.session)
        await conn.send(msg)
        with anyio.fail_after(20):
            while True:
                reply = await conn.receive()
                if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"] and \
                        reply["header"]["msg_type"] == "kernel_info_reply":
                    result += ", kernel_info_reply received"
                    break
    except websockets.ConnectionClosed as e:
        rcvd = e.rcvd
        result += f", then closed {rcvd.code if rcvd else '(no close frame)'}" \
                  f" {rcvd.reason if rcvd else ''}".rstrip()
    except TimeoutError:
        result += ", no kernel_info_reply within 20 s"
    except Exception as e:  # report what failed
        result += f", then {type(e).__name__} {e}"[:100]
    finally:
        await ws.close()
    return result


async def probe(key: str, variant: Variant, root: Path) -> list[str]:
    server = variant.start(root / key)
    server.env[SERVER_CANARY] = "1"
    started = time.monotonic()
    await anyio.to_thread.run_sync(lambda: server.start(120))
    probe = Probe(server, variant)
    command = " ".join(redact(server.command(), server.token, server.workdir))
    probe.out += [f"## {variant.label}\n",
                  f"`{key}`: command `{command}`, ready in {time.monotonic() - started:.1f} s.\n"]
    try:
        await probe.login()
        await probe.detection()
        await probe.rest()
        await probe.environment()
        await probe.websocket()
        await probe.cleanup()
    except Exception as e:  # keep what was measured
        probe.out.append(f"\n**probe failed**: {type(e).__name__}: {e}\n")
    finally:
        stopped = time.monotonic()
        await anyio.to_thread.run_sync(server.stop)
        probe.out.append(f"Stopped in {time.monotonic() - stopped:.1f} s.\n")
    return probe.out


def redact(command: list[str], token: str, workdir: Path) -> list[str]:
    """The command line without the token, the temporary directory or this checkout's path."""
    root = str(Path(__file__).resolve().parents[2])
    return [arg.replace(token, "<t>").replace(str(workdir), "<workdir>").replace(root, ".")
            for arg in command]


async def main(keys: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="remote-kinds-") as tmp:
        for key in keys:
            lines = await probe(key, VARIANTS[key], Path(tmp))
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:] or list(VARIANTS))
