"""ego4d-dl: a fast, resumable, verifying downloader for the Ego4D dataset.

From code::

    import ego4d_dl

    plan = ego4d_dl.plan("~/ego4d_data", datasets=["annotations"])
    summary = ego4d_dl.download("~/ego4d_data", datasets=["annotations"], on_event=print)

``plan``/``download`` (and ``aplan``/``adownload`` in a running event loop) take the command
line's options as keyword arguments, return values and raise ``Ego4dDLError``s; they never
print. The layers, and the contract that keeps them, are in ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Ego4dDLError",
    "Plan",
    "RunSummary",
    "__version__",
    "adownload",
    "aplan",
    "download",
    "plan",
]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import adownload, aplan, download, plan
    from .errors import Ego4dDLError
    from .events import RunSummary
    from .planned import Plan

# Loaded on first use, so that `import ego4d_dl` (and the command line's start) stays light.
_LAZY = {
    "adownload": "api",
    "aplan": "api",
    "download": "api",
    "plan": "api",
    "Ego4dDLError": "errors",
    "RunSummary": "events",
    "Plan": "planned",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ego4d_dl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
