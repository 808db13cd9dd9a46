"""civiclake as built before the one-pipeline reshape (issue #19), run as a CLI in a subprocess.

``tests/fixtures/civiclake-6893fc3-py3-none-any.whl`` is main at commit 6893fc3 (see the
fixtures' README). Upgrade tests make tables with it, then load them with the current code: a
user upgrades with existing tables in place. Same venv dependencies, same environment (so the
same CIVICLAKE_HOME), plus ``env``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "civiclake-6893fc3-py3-none-any.whl"
)


def run_old_cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``civiclake ARGS`` with the old code, unpacked once into ``workdir/old-civiclake``."""
    code = workdir / "old-civiclake"
    if not code.exists():
        with zipfile.ZipFile(WHEEL) as wheel:
            wheel.extractall(code)
    return subprocess.run(
        [sys.executable, "-m", "civiclake.cli", *args],
        env={**os.environ, **(env or {}), "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
