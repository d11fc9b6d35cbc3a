"""The compiled hot paths, if built, and the switch that turns them off.

``simcore/_native.pyx`` (built by ``setup.py`` at install when a C compiler is present) holds
the compiled block pool, block hashing and the decode window's step loop and block events.
Each has a
pure-Python twin with the same results; the tests hold them equal. Fast mode uses the compiled
ones when they are importable; ``KVSWEEP_PURE_PYTHON=1`` in the environment makes it use the
Python ones (to compare, or to debug with a Python debugger). Reference mode always runs pure
Python.
"""

from __future__ import annotations

import os
from types import ModuleType

PURE_ENV = "KVSWEEP_PURE_PYTHON"


def _load() -> ModuleType | None:
    if os.environ.get(PURE_ENV) == "1":
        return None
    try:
        import simcore._native as mod
    except ImportError:
        return None
    return mod


NATIVE: ModuleType | None = _load()


def describe() -> str:
    """One line for benchmarks and logs: which implementation fast mode runs."""
    if NATIVE is not None:
        return "compiled (simcore/_native.pyx)"
    why = f"{PURE_ENV}=1" if os.environ.get(PURE_ENV) == "1" else "simcore._native not built"
    return f"pure Python ({why})"
