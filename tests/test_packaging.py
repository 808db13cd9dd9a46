"""The wheel and the Docker image ship civiclake, not the test launchers (testsupport/)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = sorted(p.stem for p in (ROOT / "testsupport").glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Build the wheel from a copy of the repository (what `pip install .` would install)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".emulators", "__pycache__", "*.egg-info", "build", "test-artifacts"
        ),
    )
    out = tmp / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("civiclake-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_launchers_are_in_testsupport() -> None:
    assert {"postgres", "objectstores", "bigquery", "dockerd", "browser", "prefect_server"} <= set(
        LAUNCHERS
    )


@pytest.mark.slow
def test_wheel_holds_no_launcher(wheel_names: list[str]) -> None:
    assert "civiclake/cli/__init__.py" in wheel_names
    assert not [n for n in wheel_names if n.startswith("testsupport/")]
    shipped = {Path(n).stem for n in wheel_names if n.startswith("civiclake/testing/")}
    assert shipped == {"__init__", "socrata", "socrata_samples"}
    assert not shipped & set(LAUNCHERS)


def test_docker_image_copies_no_launcher() -> None:
    copies = re.findall(
        r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+\s*$", (ROOT / "Dockerfile").read_text(), re.M
    )
    sources = {s for line in copies for s in line.split()}
    assert sources == {"pyproject.toml", "README.md", "src"}
    launchers_in_src = [
        p.stem for p in (ROOT / "src" / "civiclake" / "testing").glob("*.py") if p.stem in LAUNCHERS
    ]
    assert launchers_in_src == []
