"""JupyterLab's collaboration extensions kept off the page when the collaboration plugins are.

`pip install "jupyverse[collaboration]"` installs the server plugins (fps-yjs, fps-yrooms...)
and JupyterLab extensions (`@jupyter/docprovider-extension`, `@jupyter/collaboration-extension`).
Jupyverse serves every installed JupyterLab extension whatever plugins run, and the docprovider
extension replaces JupyterLab's file browser and cell executor with ones that need the collaboration
rooms: with the server plugins disabled (`--disable yjs`), notebooks open on rooms that do not exist
and never connect their kernel (measured: tests/clients/test_browser.py). When the front runs
without the collaboration plugins, it takes those extensions off its page config and gives back what
they disabled, so JupyterLab works as without them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

COLLABORATION_LABEXTENSIONS = ("@jupyter/docprovider-extension",
                               "@jupyter/collaboration-extension")


def installed(extensions_dir: Path) -> dict[str, list[str]]:
    """The collaboration extensions installed there, each with the plugins it disables."""
    found: dict[str, list[str]] = {}
    for name in COLLABORATION_LABEXTENSIONS:
        try:
            package = json.loads((extensions_dir / name / "package.json").read_text())
        except (OSError, ValueError):
            continue
        disabled = (package.get("jupyterlab") or {}).get("disabledExtensions") or []
        found[name] = [str(d) for d in disabled]
    return found


def without_collaboration(extensions: dict[str, list[str]]
                          ) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """A page config hook (jupyverse_lab.PageConfig.register) that leaves these out."""
    names = set(extensions)
    their_disabled = {d for disabled in extensions.values() for d in disabled}

    async def hook(config: dict[str, Any]) -> None:
        # New lists: the page config holds the lab module's own.
        config["federated_extensions"] = [
            e for e in config.get("federated_extensions") or []
            if not (isinstance(e, dict) and e.get("name") in names)]
        config["disabledExtensions"] = [
            d for d in config.get("disabledExtensions") or [] if d not in their_disabled]

    return hook
