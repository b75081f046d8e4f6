"""The linter (ruff, with import sorting) and the type checker (mypy) are clean on the product's
packages: both are configured in pyproject.toml, and this test is how CI runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ["ja4_core", "stream_scorer", "trainer", "ja4_dev"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean_on_the_product():
    done = _run("ruff", "check", *PACKAGES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean_on_the_product():
    done = _run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
