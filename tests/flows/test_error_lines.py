"""A failing flow ends the command with its one ``error:`` line (issue 18): no Python traceback
on the console, the user's own file named once, Prefect's shutdown lines not after it."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "bnt_sample.csv"

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]


def civiclake(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "COLUMNS": "200", "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run(
        [sys.executable, "-m", "civiclake.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def truncated_gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data)[:300])
    return path


def assert_ends_with_one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), stderr
    assert sum(line.startswith("error: ") for line in stderr.splitlines()) == 1
    return last


def test_a_truncated_bnt_file_names_the_users_file(tmp_path: Path) -> None:
    path = truncated_gzip(tmp_path / "bnt_export.csv.gz", SAMPLE_CSV.read_bytes())
    done = civiclake("bnt", "run", "--from-file", str(path))
    assert done.returncode == 1, done.stderr
    last = assert_ends_with_one_error(done.stderr)
    assert str(path) in last and "is the file complete?" in last
    assert "raw/" not in last and "run=" not in last  # not the raw-zone copy


def test_a_truncated_tlc_file_says_its_month_once(tmp_path: Path) -> None:
    path = truncated_gzip(
        tmp_path / "green_tripdata_2020-10.csv.gz",
        b"VendorID,lpep_pickup_datetime,lpep_dropoff_datetime\n"
        + b"2,2020-10-01 00:00:00,x\n" * 9000,
    )
    done = civiclake("taxi", "run", "--from-file", str(path))
    assert done.returncode == 1, done.stderr
    last = assert_ends_with_one_error(done.stderr)
    assert last.count("green 2020-10") == 1, last
