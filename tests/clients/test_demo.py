"""The demo a newcomer sees (`scripts/demo.py`, what `bash scripts/demo.sh` runs after setup):
a remote and a front with local kernels, a notebook root holding only the example notebook."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import nbformat
import pytest

from tests.support.kernel_client import KernelConnection
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
NOTEBOOK = "where-does-my-kernel-run.ipynb"


def start_demo(workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    out = workdir / "demo.out"
    with open(out, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(DEMO), "--workdir", str(workdir / "demo"),
             "--front-port", str(free_port()), "--remote-port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, out


def wait_for_url(process: subprocess.Popen[bytes], out: Path, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "Press Ctrl-C" in text:
            match = re.search(r"http://127\.0\.0\.1:\d+/\?token=\w+&redirect=\S+", text)
            assert match, text
            return match[0]
        assert process.poll() is None, f"the demo exited:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"the demo did not start within {timeout} s:\n{out.read_text()}")


async def run_cell(client: httpx.AsyncClient, base: str, kernel: str, code: str) -> str:
    response = await client.post("/api/sessions", json={
        "path": NOTEBOOK, "type": "notebook", "name": NOTEBOOK, "kernel": {"name": kernel}})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["kernel"]["id"]
    conn = await KernelConnection.open(
        f"ws://{base.removeprefix('http://')}api/kernels/{kernel_id}/channels",
        cookie=f"fastapiusersauth={client.cookies['fastapiusersauth']}")
    try:
        return (await conn.execute(code)).stdout
    finally:
        await conn.close()
        # One session per path: the next kernel gets a new one.
        await client.delete(f"/api/sessions/{response.json()['id']}")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_demo_shows_local_and_remote_kernels_and_keeps_its_root_clean(
        tmp_path: Path) -> None:
    """The demo starts, lists "(remote)" and "(local)" kernels, its notebook root holds only
    the example notebook (state and logs elsewhere), whose cell tells a remote kernel from a
    local one next to the front's pid; Ctrl-C (SIGTERM) stops both servers."""
    process, out = start_demo(tmp_path)
    try:
        url = await anyio.to_thread.run_sync(wait_for_url, process, out)
        base = url.partition("?")[0]
        root = tmp_path / "demo" / "notebooks"
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            # The printed URL logs the browser in and opens the example notebook.
            opened = await client.get(url, follow_redirects=True)
            assert opened.status_code == 200
            assert opened.url.path == f"/lab/tree/{NOTEBOOK}"
            assert client.cookies.get("fastapiusersauth")
            with anyio.fail_after(90):
                while True:
                    specs = (await client.get("/api/kernelspecs")).json()["kernelspecs"]
                    if len(specs) == 2:
                        break
                    await anyio.sleep(0.2)
            shown = sorted(s["spec"]["display_name"] for s in specs.values())
            assert shown == ["Python 3 (ipykernel) (local)", "Python 3 (ipykernel) (remote)"]
            listed = (await client.get("/api/contents")).json()["content"]
            assert [item["name"] for item in listed] == [NOTEBOOK]

            notebook = json.loads((root / NOTEBOOK).read_text())
            nbformat.validate(nbformat.from_dict(notebook))  # JupyterLab opens it
            assert notebook["metadata"]["kernelspec"]["name"] in specs
            [code] = [c["source"] for c in notebook["cells"] if c["cell_type"] == "code"]
            front = re.search(r"FRONT = (\{.*\})", code)
            assert front, code
            front_pid = json.loads(front[1])["pid"]
            on_remote = await run_cell(client, base, "python3", code)
            on_local = await run_cell(client, base, "local:python3", code)
        assert "That is not the front: a remote kernel" in on_remote, on_remote
        assert "That is the front: a local kernel" in on_local, on_local
        for output in (on_remote, on_local):
            assert re.search(rf"^pid +\d+ +{front_pid}$", output, re.M), output
        assert re.search(rf"^cwd +{re.escape(str(root))} +{re.escape(str(root))}$",
                         on_local, re.M), on_local
        assert sorted(os.listdir(root)) == [NOTEBOOK]
        assert re.search(r"^cwd +\S+/demo/remote-files ", on_remote, re.M), on_remote
        assert (tmp_path / "demo" / "state" / "front" / "front.log").is_file()

        process.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(process.wait, 60) == 0
        assert not alive(front_pid)
    finally:
        if process.poll() is None:  # the demo stops its servers on SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_demo_sh_installs_what_the_demo_needs_only(tmp_path: Path) -> None:
    """`bash scripts/demo.sh` in a fresh clone makes one virtualenv with the package, Jupyverse
    and ipykernel, and none of the tests' tooling (pytest, browsers' drivers, jupyter_server,
    the Enterprise Gateway virtualenv, Node packages)."""
    repo = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True, timeout=120)
    result = subprocess.run(["bash", "scripts/demo.sh", "--help"], cwd=clone, timeout=900,
                            capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--front-port" in result.stdout
    bin_dir = clone / ".venv" / "bin"
    assert (bin_dir / "jupyverse").exists()
    installed = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout.lower()
    assert "ipykernel==" in installed and "fps-remote-kernels==" in installed
    for tool in ("pytest", "playwright", "jupyter-server==", "jupyter-kernel-gateway", "mypy"):
        assert tool not in installed, tool
    assert not (clone / ".venv-eg").exists()
    assert not (clone / "tests" / "support" / "node" / "node_modules").exists()
