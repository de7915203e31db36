"""The documentation stays true to the code and stays navigable: the options reference is the
one generated from the config model, every option is documented, the README stays short, and
every relative link resolves. Fast: no server is started.

The options are read from `jupyverse --help-all` (about 4 s here), which is what an operator
sees, so an option the model gains is caught even if the generator missed it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
JUPYVERSE = Path(sys.executable).with_name("jupyverse")
README_LIMIT = 8192

sys.path.insert(0, str(REPO / "scripts"))
import options_doc  # noqa: E402  (a script, not a package)

pytestmark = pytest.mark.fast

# [text](target) and [text](target "title"); images too.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _relative_links(page: Path) -> list[str]:
    """Link targets of a Markdown page that point into the repository (not URLs, not anchors
    of the page itself), outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", page.read_text()))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        targets.append(target)
    return targets


def test_options_reference_is_the_generated_one() -> None:
    """docs/operators/options.md holds exactly what scripts/options_doc.py generates."""
    page = options_doc.PAGE.read_text()
    assert options_doc.current_block(page) == options_doc.render(), (
        "docs/operators/options.md is out of date: run python scripts/options_doc.py --write")


def test_every_option_jupyverse_lists_is_documented() -> None:
    """Every remote_kernels.* option in `jupyverse --help-all` is named in docs/."""
    result = subprocess.run([str(JUPYVERSE), "--help-all"], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    options = set(re.findall(r"^(remote_kernels\.[a-z0-9_]+):", result.stdout, re.MULTILINE))
    assert len(options) > 10, f"too few options found in --help-all:\n{result.stdout[-2000:]}"
    docs = "\n".join(page.read_text() for page in DOCS.rglob("*.md"))
    missing = sorted(name for name in options if not re.search(re.escape(name) + r"\b", docs))
    assert not missing, f"options not named in docs/: {missing}"


def test_readme_is_at_most_8_kib() -> None:
    """README.md stays short enough to read in minutes: at most 8192 bytes."""
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes (limit {README_LIMIT}): move detail into docs/")


def test_relative_links_point_to_files_that_exist() -> None:
    """Every relative link in README.md and docs/**/*.md names a file or folder that exists."""
    broken = []
    for page in _pages():
        for target in _relative_links(page):
            path = target.split("#", 1)[0].split("?", 1)[0]
            if not path:
                continue
            resolved = (page.parent / path).resolve()
            # A path from the root (/docs/...) or out of the repository breaks off GitHub.
            if path.startswith("/") or not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, "relative links to nothing:\n" + "\n".join(broken)
