"""Server-side execution in JupyterLab (headless Chromium) with the kernel on the remote: a cell
keeps running and its outputs keep being saved after the page is closed; reopened, the notebook
shows every line and the cell's count. A screenshot per step in test-artifacts/browser-execution/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.clients.test_browser import browser, playwright  # noqa: F401  (the fixtures)
from tests.support.collab import cell_of, ended, on_disk, text_of
from tests.support.servers import Server, front_server

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser-execution"
TIMEOUT_MS = 30_000
LINES = 40  # one every 0.5 s: about 20 s
CELL = (f"import time\nfor i in range({LINES}):\n    print(f'line {{i}}', flush=True)\n"
        "    time.sleep(0.5)")
NOTEBOOK = {
    "cells": [{"cell_type": "code", "id": "long", "source": CELL, "metadata": {},
               "outputs": [], "execution_count": None}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def lab_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front with the collaboration plugins and JupyterLab's server-side execution; rooms
    close 3 s after their last client leaves (60 s by default), well before the cell ends."""
    server = front_server(tmp_path_factory.mktemp("lab-exec"), remote.url, remote.token,
                          collaboration=True, extra=[
                              "--set", "jupyterlab.server_side_execution=true",
                              "--set", "yrooms.document_cleanup_delay=3"]).start()
    yield server
    server.stop()


def _saved_when_ended(front: Server, path: str, cell_id: str, timeout: float) -> dict:
    """The notebook on disk once the cell has its count (Playwright's sync API owns this
    thread's event loop: a plain bounded poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = on_disk(front, path)
        if saved is not None and ended(cell_id)(saved):
            return saved
        time.sleep(0.2)
    raise AssertionError(f"{path} on disk never had the cell's count: {on_disk(front, path)}")


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def _open(browser: Browser, front: Server) -> tuple[BrowserContext, Page]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{front.url}?token={front.token}")  # logs in (the auth cookie)
    page.goto(f"{front.url}lab/tree/long.ipynb")
    return context, page


def test_cell_runs_on_with_the_page_closed(browser: Browser,  # noqa: F811
                                           lab_front: Server) -> None:
    """Run a 20 s cell, close the page after its first lines, reopen after it ended: every
    line is there, in the page and on disk, and the prompt shows the count."""
    expect.set_options(timeout=TIMEOUT_MS)
    (lab_front.workdir / "long.ipynb").write_text(json.dumps(NOTEBOOK))

    context, page = _open(browser, lab_front)
    executes: list[int] = []  # JupyterLab asked the front, not the kernel socket, to run it
    page.on("response", lambda r: executes.append(r.status)
            if r.url.split("?")[0].endswith("/execute") else None)
    try:
        expect(page.locator(".jp-StatusBar-TextItem", has_text="| Idle")).to_be_visible()
        cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first
        cell.locator(".cm-content").click()
        page.keyboard.press("Control+Enter")
        expect(cell.locator(".jp-InputPrompt")).to_have_text("[*]:")
        expect(cell.locator(".jp-OutputArea-output")).to_contain_text("line 4")
        assert executes == [200]
    finally:
        _shot(page, "01-running")
        context.close()  # the tab closed, about 3 s into the cell

    saved = _saved_when_ended(lab_front, "long.ipynb", "long", timeout=90)
    assert text_of(cell_of(saved, "long")) == "".join(f"line {i}\n" for i in range(LINES))

    context, page = _open(browser, lab_front)
    try:
        cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first
        expect(cell.locator(".jp-OutputArea-output")).to_contain_text(f"line {LINES - 1}")
        count = cell_of(saved, "long")["execution_count"]
        expect(cell.locator(".jp-InputPrompt")).to_have_text(f"[{count}]:")
        text = cell.locator(".jp-OutputArea-output").inner_text()
        assert [line for line in text.splitlines() if line] == [
            f"line {i}" for i in range(LINES)]
    finally:
        _shot(page, "02-reopened")
        context.close()
