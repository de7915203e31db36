"""JupyterLab in headless Chromium, through the front, with the kernels on the remote.

One notebook is used from the first test to the last, as a user would: each test is one step
and relies on the steps before it. Every step leaves a screenshot in test-artifacts/browser/,
whether it passed or failed. Chromium is Debian's (scripts/setup.sh installs it); Playwright's
own browser download is never used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from playwright.sync_api import (
    Error as PlaywrightError,
)

from tests.support.servers import Server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
TIMEOUT_MS = 30_000
# Kernel REST and resource routes the front serves: none of them may fail during the steps.
WATCHED_PATHS = ("/api/kernels", "/api/sessions", "/api/kernelspecs", "/kernelspecs/")

# A PNG made in the kernel from its raw bytes (no imaging library needed): 48 x 32, red.
PNG_CELL = """\
import struct, zlib
from IPython.display import Image, display
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
rows = b"".join(b"\\x00" + bytes((220, 40, 40)) * 48 for _ in range(32))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 48, 32, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
display(Image(data=png, format="png"))"""


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (apt-get install chromium)")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


class Lab:
    """The JupyterLab page, and the kernel-route failures it met."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.failures: list[str] = []
        page.on("response", self._watch)

    def _watch(self, response) -> None:
        path = response.url.split("://", 1)[-1].partition("/")[2].split("?")[0]
        if response.status >= 400 and ("/" + path).startswith(WATCHED_PATHS):
            self.failures.append(f"{response.request.method} /{path} -> {response.status}")

    @property
    def cells(self) -> Locator:
        return self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")

    def run_cell(self, code: str) -> Locator:
        """Type `code` in the last (empty) cell and run it with Shift+Enter; the cell that ran."""
        count = self.cells.count()
        self.cells.nth(count - 1).locator(".cm-content").click()
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Shift+Enter")
        # Run-and-select-next appends a new empty cell below the last one.
        expect(self.cells).to_have_count(count + 1)
        return self.cells.nth(count - 1)

    def kernel_status(self, status: str) -> None:
        """Wait until the status bar shows the notebook's kernel in `status` (e.g. Idle)."""
        expect(self.page.locator(".jp-StatusBar-TextItem", has_text=f"| {status}")).to_be_visible()


@pytest.fixture(scope="module")
def lab(browser: Browser, front: Server) -> Iterator[Lab]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    lab = Lab(page)
    yield lab
    context.close()


@pytest.fixture(scope="module")
def remote_client(remote: Server) -> Iterator[httpx.Client]:
    """The remote's own API, to see where the kernels really are."""
    with httpx.Client(base_url=remote.url, params={"token": remote.token}, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def screenshot(request: pytest.FixtureRequest, lab: Lab) -> Iterator[None]:
    """A screenshot of the page after each step, pass or fail."""
    failures_before = len(lab.failures)
    yield
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    order = [item.name for item in request.session.items if item.module is request.module]
    number = order.index(request.node.name) + 1 if request.node.name in order else 0
    try:
        lab.page.screenshot(path=ARTIFACTS / f"{number:02d}-{request.node.name}.png")
    except PlaywrightError:
        pass  # a dead page must not hide the test's own failure
    failures = lab.failures[failures_before:]
    assert not failures, "the front answered JupyterLab with errors: " + ", ".join(failures)


def remote_kernel_ids(remote_client: httpx.Client) -> set[str]:
    response = remote_client.get("/api/kernels")
    assert response.status_code == 200
    return {kernel["id"] for kernel in response.json()}


def notebook_kernel_on_remote(lab: Lab, remote_client: httpx.Client) -> str:
    """The id of the kernel of the open notebook's session, as the remote lists it."""
    path = lab.page.locator(
        "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel"
    ).inner_text()
    sessions = remote_client.get("/api/sessions").json()
    kernels = [s["kernel"]["id"] for s in sessions if s["path"] == path]
    assert len(kernels) == 1, f"no single session for {path!r} on the remote: {sessions}"
    return kernels[0]


def test_launcher_shows_the_remote_python_kernel_with_its_logo(
    lab: Lab, front: Server, remote_client: httpx.Client
) -> None:
    """Opening /?token= shows a launcher with the remote's Python kernel and its logo loaded."""
    spec = remote_client.get("/api/kernelspecs").json()["kernelspecs"]["python3"]["spec"]
    lab.page.goto(f"{front.url}?token={front.token}")
    card = lab.page.locator(
        f'.jp-LauncherCard[data-category="Notebook"][title="{spec["display_name"]}"]'
    )
    expect(card).to_be_visible()
    logo = card.locator("img")
    expect(logo).to_have_attribute("src", "/kernelspecs/python3/logo-svg.svg")
    # A broken image is `complete` with a natural width of 0.
    lab.page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=logo.element_handle(), timeout=10_000
    )


def test_new_notebook_runs_print_on_a_remote_kernel(
    lab: Lab, remote_client: httpx.Client
) -> None:
    """A notebook made from the launcher gets a remote kernel and print(6*7) shows 42."""
    lab.page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    # Cells run before the kernel is connected are silently not executed by JupyterLab.
    lab.kernel_status("Idle")
    cell = lab.run_cell("print(6*7)")
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("42")
    expect(cell.locator(".jp-InputPrompt")).to_have_text("[1]:")
    kernel_id = notebook_kernel_on_remote(lab, remote_client)
    assert kernel_id in remote_kernel_ids(remote_client)


def test_png_output_is_rendered(lab: Lab) -> None:
    """A PNG displayed by the kernel is rendered as a loaded 48x32 image."""
    cell = lab.run_cell(PNG_CELL)
    image = cell.locator(".jp-RenderedImage img")
    expect(image).to_be_visible()
    lab.page.wait_for_function(
        "img => img.complete && img.naturalWidth === 48 && img.naturalHeight === 32",
        arg=image.element_handle(), timeout=10_000,
    )


def test_interrupt_button_stops_a_sleeping_cell(lab: Lab) -> None:
    """The toolbar's interrupt button ends time.sleep(60) with KeyboardInterrupt within seconds."""
    cell = lab.run_cell('print("sleeping", flush=True); import time; time.sleep(60)')
    # The kernel is inside the cell once its first output arrived.
    expect(cell.locator(".jp-OutputArea-output").first).to_have_text("sleeping")
    started = time.monotonic()
    lab.page.locator(
        '.jp-NotebookPanel-toolbar [data-command="notebook:interrupt-kernel"]'
    ).click()
    expect(cell.locator(".jp-OutputArea")).to_contain_text("KeyboardInterrupt", timeout=10_000)
    assert time.monotonic() - started < 10
    lab.kernel_status("Idle")


def test_restart_from_kernel_menu_then_run_again(lab: Lab) -> None:
    """Kernel > Restart Kernel… restarts it: the next cell runs with execution count 1."""
    before = lab.run_cell("restart_marker = 1")
    expect(before.locator(".jp-InputPrompt")).not_to_have_text("[ ]:")
    lab.page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
    lab.page.locator('.lm-Menu-item[data-command="kernelmenu:restart"]').click()
    lab.page.locator(".jp-Dialog .jp-mod-accept").click()
    expect(lab.page.locator(".jp-Dialog")).to_have_count(0)
    lab.kernel_status("Idle")
    cell = lab.run_cell("print('restart_marker' in globals())")
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("False")
    expect(cell.locator(".jp-InputPrompt")).to_have_text("[1]:")


def test_shut_down_from_running_panel_ends_the_remote_kernel(
    lab: Lab, remote_client: httpx.Client
) -> None:
    """Shut Down in the Running panel ends the notebook's kernel on the remote."""
    kernel_id = notebook_kernel_on_remote(lab, remote_client)
    assert kernel_id in remote_kernel_ids(remote_client)
    lab.page.locator('[data-id="jp-running-sessions"]').click()
    item = lab.page.locator(f'.jp-RunningSessions-item.jp-mod-kernel[data-context="{kernel_id}"]')
    # The Shut Down button shows when the pointer is over the kernel's row.
    item.locator("> .jp-RunningSessions-itemLabel").hover()
    item.locator("> .jp-RunningSessions-itemShutdown").click()
    expect(item).to_have_count(0)
    # The notebook's toolbar says so (its status bar item stays at "Disconnected").
    expect(lab.page.locator(".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName")).to_have_text(
        "No Kernel"
    )
    assert kernel_id not in remote_kernel_ids(remote_client)
