"""The front starts where libraries ship no sources (only `.pyc` files, as slim images and
frozen apps do): untuned, with a warning, instead of dying in a code check."""

from __future__ import annotations

import compileall
import importlib
import shutil
from pathlib import Path

import pytest

from tests.support.harness import logged_in
from tests.support.servers import Server, front_server

pytestmark = pytest.mark.anyio

# What the front's code checks read (host/code_check.py), and the package itself.
SOURCELESS = ("anyio", "anycorn", "wsproto", "fps_remote_kernels")


def sourceless_copies(target: Path) -> Path:
    """Copies of the SOURCELESS packages holding only legacy `.pyc` files (next to where
    each `.py` was), which Python imports when no source is there."""
    for name in SOURCELESS:
        package = Path(importlib.import_module(name).__file__ or "").parent
        copy = target / name
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
        assert compileall.compile_dir(copy, quiet=1, legacy=True)
        for source in copy.rglob("*.py"):
            source.unlink()
    return target


async def test_front_starts_untuned_without_library_sources(remote: Server, tmp_path: Path
                                                            ) -> None:
    """With anyio, anycorn, wsproto and the plugin installed as `.pyc` only, the front starts,
    warns that it cannot read the code it would tune, and serves the kernels API."""
    path = sourceless_copies(tmp_path / "sourceless")
    front = front_server(tmp_path, remote.url, remote.token)
    front.env["PYTHONPATH"] = str(path)
    front.start()
    try:
        log = front.log_path.read_text()
        assert "Cannot read a library's code" in log, log
        async with logged_in(front) as client:
            response = await client.get("/api/kernelspecs")
            assert response.status_code == 200, response.text
            assert response.json()["kernelspecs"], response.text
    finally:
        front.stop()
