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


CRASHED = 137
"""The exit code of an old run ended by ``crash_at`` (as a SIGKILL reports it)."""

_CRASH_AT = """\
import importlib, os, runpy, sys
module, name = sys.argv[1].split(":")
def crash(*args, **kwargs):
    os._exit({code})
setattr(importlib.import_module(module), name, crash)
sys.argv = ["civiclake", *sys.argv[2:]]
runpy.run_module("civiclake.cli", run_name="__main__")
"""


def run_old_cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``civiclake ARGS`` with the old code, unpacked once into ``workdir/old-civiclake``.

    ``crash_at`` (``module:function`` of the old code): the process dies at once, exit
    ``CRASHED``, no cleanup, when the old code calls that function, e.g. the second of a load's
    two commits: the state a SIGKILL at that moment leaves.
    """
    code = workdir / "old-civiclake"
    if not code.exists():
        with zipfile.ZipFile(WHEEL) as wheel:
            wheel.extractall(code)
    start = ["-m", "civiclake.cli"]
    if crash_at:
        start = ["-c", _CRASH_AT.format(code=CRASHED), crash_at]
    return subprocess.run(
        [sys.executable, *start, *args],
        env={**os.environ, **(env or {}), "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
