"""The README's "Use it", as a new user runs it: the wheel built from this checkout, each
machine's install line in a fresh virtualenv, the README's commands for the kernel host and
the front, then a cell executed through the front.

The commands are read from the README itself, so the README cannot drift from what works.
What the test changes in them, and only that: loopback addresses for `0.0.0.0` and the host
name `gpu-box`, free ports for the README's, a home directory of the test's own, and the
kernel host's token for the README's `...`; pip finds this checkout's wheel by
`PIP_FIND_LINKS` (the package is not on PyPI), everything else comes from the registry.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.kernel_client import KernelConnection
from tests.support.servers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVER_RUNNING = re.compile(r"Server running .*url='(http://[^']+)'")


def use_it_blocks() -> list[str]:
    """The bash blocks of the README's "Use it" section, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def joined_lines(block: str) -> list[str]:
    """The block's commands, continuation lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, where pip finds it by name."""
    target = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(target), str(REPO)], check=True, timeout=300)
    return target


class Machine:
    """A fresh virtualenv and home directory: one machine of the README."""

    def __init__(self, root: Path, wheels: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True,
                       timeout=120)
        find_links = " ".join(p for p in (os.environ.get("PIP_FIND_LINKS"), str(wheels)) if p)
        self.env = {**{k: v for k, v in os.environ.items()
                       if not k.startswith(("VIRTUAL_ENV", "PYTHON", "JUPYTER_", "REMOTE_"))},
                    "PATH": f"{root / 'venv' / 'bin'}:{os.environ['PATH']}",
                    "HOME": str(self.home), "PIP_FIND_LINKS": find_links}
        self.servers: list[subprocess.Popen[bytes]] = []

    def run(self, line: str, timeout: float = 600) -> None:
        """A command of the README's that ends (an install), in this machine's shell."""
        result = subprocess.run(["bash", "-c", line], env=self.env, cwd=self.home,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"

    def serve(self, script: str, log: Path) -> subprocess.Popen[bytes]:
        """Commands of the README's that end with a server, in one shell, in the background."""
        with log.open("wb") as out:
            process = subprocess.Popen(["bash", "-c", script], env=self.env, cwd=self.home,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.servers.append(process)
        return process

    def stop(self) -> None:
        for process in self.servers:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)


def login_url(process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> str:
    """The URL a server printed for logging in, once it prints it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = SERVER_RUNNING.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert process.poll() is None, f"the server exited:\n{log.read_text()}"
        time.sleep(0.2)
    raise AssertionError(f"no login URL within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def kernel_host(wheels: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[int, str]]:
    """The README's kernel host, running: its port and token."""
    install, *commands = joined_lines(use_it_blocks()[0])
    assert install.startswith("pip install"), install
    machine = Machine(tmp_path_factory.mktemp("kernel-host"), wheels)
    machine.run(install)
    port = free_port()
    script = "\n".join(commands).replace("0.0.0.0", "127.0.0.1").replace("8002", str(port))
    log = machine.root / "kernel-host.log"
    try:
        url = login_url(machine.serve("set -e\n" + script, log), log)
        yield port, url.split("token=", 1)[1]
    finally:
        machine.stop()


async def execute_through(url: str, code: str) -> str:
    """Log in with the URL a front printed, start a kernel, run `code`: its stdout."""
    base, token = url.split("?token=", 1)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        response = await client.get("/", params={"token": token})
        assert response.status_code < 400, response.text[:500]
        assert client.cookies.get("fastapiusersauth"), "the printed URL logged nobody in"
        response = await client.get("/lab", follow_redirects=True)
        assert response.status_code == 200 and "JupyterLab" in response.text, response.text[:500]
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, (started.status_code, started.headers, started.text)
        kernel_id = started.json()["id"]
        try:
            cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
            ws_base = base.replace("http://", "ws://")
            conn = await KernelConnection.open(f"{ws_base}/api/kernels/{kernel_id}/channels",
                                               cookie=cookie)
            try:
                with anyio.fail_after(120):
                    return (await conn.execute(code)).stdout
            finally:
                await conn.close()
        finally:
            await client.delete(f"/api/kernels/{kernel_id}")


@pytest.mark.parametrize("block", [1, 2], ids=["front", "team front"])
async def test_readme_commands_run_a_cell_from_a_fresh_install(
        block: int, kernel_host: tuple[int, str], wheels: Path, tmp_path: Path) -> None:
    """Each front of the README, installed with its own line in a fresh virtualenv and started
    with its command verbatim, prints a login URL that lets a user in, and runs a cell on the
    README's kernel host."""
    port, token = kernel_host
    install, *commands = [line for line in joined_lines(use_it_blocks()[block])
                          if not line.startswith("export REMOTE_KERNELS_TOKEN=")]
    assert install.startswith("pip install"), install
    machine = Machine(tmp_path / "front", wheels)
    try:
        machine.run(install)
        machine.env["REMOTE_KERNELS_TOKEN"] = token  # what the README's `...` stands for
        front_port = free_port()
        script = "\n".join(commands).replace("gpu-box:8002", f"127.0.0.1:{port}")
        # The README's front listens on Jupyverse's default port: a free one here.
        script = script.replace("jupyverse ", f"jupyverse --port {front_port} ", 1)
        log = machine.root / "front.log"
        url = login_url(machine.serve("set -e\n" + script, log), log)
        assert f":{front_port}" in url
        stdout = await execute_through(url, "print(6 * 7)")
        assert stdout == "42\n"
    finally:
        machine.stop()


def test_the_wheel_holds_the_product_only(wheels: Path) -> None:
    """The wheel ships the package and its licence: no test, demo or benchmark harness, no
    reference to the tests' tooling (pytest, the Enterprise Gateway virtualenv), and a long
    description without links into the repository."""
    import zipfile

    (wheel,) = wheels.glob("fps_remote_kernels-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert all(n.startswith(("fps_remote_kernels/", "fps_remote_kernels-")) for n in names)
        assert not [n for n in names if "launch" in n or "/tests/" in n or "bench" in n]
        assert any(n.endswith("licenses/LICENSE") for n in names), names
        texts = {n: archive.read(n).decode(errors="replace") for n in names}
    for name, text in texts.items():
        assert ".venv-eg" not in text and "pytest" not in text.lower(), name
    metadata = next(t for n, t in texts.items() if n.endswith("/METADATA"))
    assert "License-Expression: BSD-3-Clause" in metadata
    assert not re.search(r"\]\((?!https?://)[^)]+\)", metadata), "a relative link in the README"
    assert "scripts/" not in metadata
