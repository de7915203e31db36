"""The one check behind every change the front makes to another library's behaviour.

Each change in host/ was written for one version of one function or class. Before applying it,
the front compares a digest of that code's source with the digest it was written for. A
library installed without its sources (only `.pyc` files, as in slim images and frozen apps)
cannot be read: that counts as "not applicable", like changed code, so the front starts
untuned with a warning instead of failing (`inspect.getsource` raises OSError there).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import structlog

logger = structlog.get_logger()


def code_digest(code: Any) -> str | None:
    """A short digest of the source of `code` (a function or class), None when it cannot be
    read."""
    try:
        source = inspect.getsource(code)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def not_the_code(what: str, found: str | None, expected: str) -> str:
    """Why `what` is not the code a change was written for, for an error message."""
    seen = "cannot be read" if found is None else f"changed (digest {found})"
    return f"{what} {seen}, expected digest {expected}"


def unchanged(code: Any, digest: str, what: str, effect: str = "not tuning it") -> bool:
    """Whether `code` is the code a change was written for (its digest is `digest`); if not,
    a warning names `what` and the `effect` of leaving it alone."""
    found = code_digest(code)
    if found == digest:
        return True
    if found is None:
        logger.warning("Cannot read a library's code: leaving it as it is", code=what,
                       effect=effect)
    else:
        logger.warning("A library's code changed: leaving it as it is", code=what,
                       digest=found, expected=digest, effect=effect)
    return False
