"""The code stays lint-clean (ruff) and type-checked (mypy: simcore, sweep, scripts), as CI runs tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    res = _run(ruff, "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_is_clean():
    pytest.importorskip("mypy")
    res = _run(sys.executable, "-m", "mypy", "simcore", "sweep", "scripts", "--ignore-missing-imports")
    assert res.returncode == 0, res.stdout + res.stderr
