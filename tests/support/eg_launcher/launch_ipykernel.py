"""A minimal Enterprise Gateway kernel launcher for ipykernel, for the DistributedProcessProxy
test (tests/test_eg_ssh.py). Enterprise Gateway's PyPI wheel ships no launchers; this one is
written from what EG 3.3 expects of them (services/processproxies/processproxy.py):

- EG runs the kernelspec's argv on the kernel host (over SSH for DistributedProcessProxy,
  `nohup ... & echo $!`) with `--RemoteProcessProxy.kernel-id`, `.response-address`
  (`ip:port` where EG listens), `.public-key` (EG's RSA public key, base64 DER) and
  `.port-range` (`lower..upper`, `0..0` for any port).
- The launcher starts the kernel, then connects to the response address and sends, then
  closes: base64(JSON {"version": 1, "key": base64(RSA-PKCS#1 v1.5(aes_key)),
  "conn_info": base64(AES-ECB(PKCS#7-padded JSON connection info))}). The connection info
  holds the five ports, `key`, `transport`, `signature_scheme`, `kernel_id`, and `pid`/`pgid`
  (EG's ssh `kill` fallback) and `comm_port`. EG replaces `ip` with the host it chose.
- On `comm_port` EG opens one connection per request, sends JSON and closes: `{"signum": n}`
  (0 is EG's liveness poll: a refused connection means the kernel is gone) or
  `{"shutdown": 1}`. The launcher closes the port once the kernel has ended.

The kernel listens on the address the SSH client reached (`SSH_CONNECTION`), so that with
hosts 127.0.0.2 and 127.0.0.3 each kernel is bound to its own "host"; `--ip` overrides it.
Runs with Enterprise Gateway's own virtualenv (ipykernel, pycryptodomex).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import pad

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
KERNEL_READY_TIMEOUT = 60.0  # seconds for the kernel to bind its ports
REQUEST_LIMIT = 64 * 1024  # bytes of one request on the comm port
REQUEST_TIMEOUT = 5.0  # seconds to read one request


class _Stop(Exception):
    """SIGTERM reached the launcher."""


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop(signum)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--RemoteProcessProxy.kernel-id", dest="kernel_id", required=True)
    parser.add_argument("--RemoteProcessProxy.response-address", dest="response_address",
                        required=True)
    parser.add_argument("--RemoteProcessProxy.public-key", dest="public_key", required=True)
    parser.add_argument("--RemoteProcessProxy.port-range", dest="port_range", default="0..0")
    parser.add_argument("--ip", default=None, help="address the kernel binds (default: the "
                        "server address of SSH_CONNECTION, else 0.0.0.0)")
    # Other RemoteProcessProxy options (spark-context-initialization-mode ...) do not apply.
    args, _ = parser.parse_known_args(argv)
    return args


def kernel_ip(explicit: str | None) -> str:
    if explicit:
        return explicit
    # "client_ip client_port server_ip server_port", set by sshd for the session.
    fields = os.environ.get("SSH_CONNECTION", "").split()
    return fields[2] if len(fields) == 4 else "0.0.0.0"


def port_range(text: str) -> tuple[int, int]:
    lower, _, upper = text.partition("..")
    return int(lower or 0), int(upper or 0)


def bind_in_range(sock: socket.socket, ip: str, lower: int, upper: int) -> None:
    """Bind `sock` to a free port of [lower, upper], or to any port when the range is empty."""
    if upper <= lower:
        sock.bind((ip, 0))
        return
    candidates = random.sample(range(lower, upper + 1), min(upper - lower + 1, 200))
    for port in candidates:
        try:
            sock.bind((ip, port))
            return
        except OSError:
            continue
    raise RuntimeError(f"no free port in {lower}..{upper} on {ip}")


def kernel_ports(ip: str, lower: int, upper: int) -> dict[str, int]:
    """Five ports for the kernel: 0 (the kernel picks and writes them back) without a range;
    free ones of the range otherwise (probed, then released for the kernel to bind)."""
    if upper <= lower:
        return dict.fromkeys(PORT_NAMES, 0)
    probes = [socket.socket() for _ in PORT_NAMES]
    try:
        for probe in probes:
            bind_in_range(probe, ip, lower, upper)
        return {name: probe.getsockname()[1] for name, probe in zip(PORT_NAMES, probes,
                                                                    strict=True)}
    finally:
        for probe in probes:
            probe.close()


def wait_for_ports(connection_file: Path, kernel: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The connection file once the kernel has written its bound ports into it."""
    deadline = time.monotonic() + KERNEL_READY_TIMEOUT
    while time.monotonic() < deadline:
        if kernel.poll() is not None:
            raise RuntimeError(f"the kernel exited with {kernel.returncode} before binding")
        try:
            info: dict[str, Any] = json.loads(connection_file.read_text())
        except (OSError, ValueError):  # being rewritten
            info = {}
        if info and all(info.get(name) for name in PORT_NAMES):
            return info
        time.sleep(0.05)
    raise RuntimeError(f"the kernel did not bind its ports within {KERNEL_READY_TIMEOUT} s")


def encrypted_payload(connection_info: dict[str, Any], public_key: str) -> bytes:
    """The response EG 3.3 decodes as a version 1 payload."""
    aes_key = get_random_bytes(16)
    rsa = PKCS1_v1_5.new(RSA.import_key(base64.b64decode(public_key)))
    body = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(connection_info).encode(), 16))
    payload = {
        "version": 1,
        "key": base64.b64encode(rsa.encrypt(aes_key)).decode(),
        "conn_info": base64.b64encode(body).decode(),
    }
    return base64.b64encode(json.dumps(payload).encode())


def send_response(address: str, payload: bytes) -> None:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)


def read_request(conn: socket.socket) -> dict[str, Any]:
    conn.settimeout(REQUEST_TIMEOUT)
    data = b""
    while len(data) <= REQUEST_LIMIT:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        return {}  # a connection that only checks the port is open: EG's liveness poll
    request = json.loads(data)
    return request if isinstance(request, dict) else {}


def serve(listener: socket.socket, kernel: subprocess.Popen[bytes]) -> None:
    """Answer EG's requests on the comm port until the kernel ends or EG says shutdown."""
    while kernel.poll() is None:
        ready, _, _ = select.select([listener], [], [], 0.5)
        if not ready:
            continue
        conn, _ = listener.accept()
        with conn:
            try:
                request = read_request(conn)
            except (OSError, ValueError) as e:
                print(f"launcher: bad request on the comm port: {e}", flush=True)
                continue
        if request.get("shutdown"):
            print("launcher: shutdown requested", flush=True)
            return
        signum = request.get("signum")
        if isinstance(signum, int) and signum > 0 and kernel.poll() is None:
            print(f"launcher: signal {signum} to the kernel", flush=True)
            kernel.send_signal(signum)


def end_kernel(kernel: subprocess.Popen[bytes]) -> None:
    if kernel.poll() is not None:
        return
    kernel.terminate()
    try:
        kernel.wait(5)
    except subprocess.TimeoutExpired:
        kernel.kill()
        kernel.wait(5)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    # EG's fallback interrupt (`kill -INT -pgid` over SSH) is for the kernel, not for us. A
    # handler rather than SIG_IGN: the kernel must not inherit an ignored SIGINT.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        os.setsid()  # one process group for launcher and kernel: EG's `kill -SIG -pgid`
    except OSError:
        pass  # already a group leader
    ip = kernel_ip(args.ip)
    lower, upper = port_range(args.port_range)
    workdir = Path(tempfile.mkdtemp(prefix=f"eg-kernel-{args.kernel_id}-"))
    connection_file = workdir / "connection.json"
    connection_file.write_text(json.dumps({
        "ip": ip, "transport": "tcp", "signature_scheme": "hmac-sha256",
        "key": uuid.uuid4().hex, "kernel_name": "", **kernel_ports(ip, lower, upper)}))
    listener = socket.socket()
    kernel: subprocess.Popen[bytes] | None = None
    try:
        bind_in_range(listener, ip, lower, upper)
        listener.listen(8)
        kernel = subprocess.Popen(
            [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection_file)],
            # The kernel ends itself if the launcher vanishes (jupyter_client does the same).
            env={**os.environ, "JPY_PARENT_PID": str(os.getpid())})
        info = wait_for_ports(connection_file, kernel)
        info.update(kernel_id=args.kernel_id, pid=os.getpid(), pgid=os.getpgid(0),
                    comm_port=listener.getsockname()[1])
        send_response(args.response_address, encrypted_payload(info, args.public_key))
        print(f"launcher: kernel {args.kernel_id} on {ip}, pid {kernel.pid}, comm port "
              f"{info['comm_port']}", flush=True)
        serve(listener, kernel)
        return 0
    except _Stop as stop:
        print(f"launcher: stopped by signal {stop.args[0]}", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # EG may signal again: finish cleaning up
        if kernel is not None:
            end_kernel(kernel)
        listener.close()  # from now on EG's liveness poll is refused: the kernel is gone
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"launcher: kernel {args.kernel_id} ended", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
