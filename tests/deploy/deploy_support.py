"""What the deployment tests' fixtures and tests share (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from testsupport.prefect_server import PrefectServer

ROOT = Path(__file__).resolve().parents[2]
TLC_FILE = ROOT.parent / "shared" / "data" / "tlc" / "green_tripdata_2020-10.csv.gz"
DATASET = "qzve-kjga"
FIRST_DAY = date(2024, 3, 1)
DAYS = 4
ROWS_PER_DAY = 480  # bnt_rows: 24 hours x 10 plazas x 2 directions
WORKER_LOG_TAIL = 80

# what tests/conftest.py sets per test, but explicit: the worker is a separate process
FAST_RETRIES = {
    "CIVICLAKE_HTTP_BACKOFF_INITIAL": "0.01",
    "CIVICLAKE_HTTP_BACKOFF_MAX": "0.05",
    "CIVICLAKE_HTTP_MAX_ATTEMPTS": "4",
    "CIVICLAKE_HTTP_TIMEOUT": "5",
    "CIVICLAKE_FETCH_RETRY_DELAY": "0",
    "CIVICLAKE_DOWNLOAD_RETRY_DELAY": "0",
}


@dataclass
class Worker:
    """The worker subprocess, its log file and the environment its flow runs get."""

    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = WORKER_LOG_TAIL) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def clean_env(server: PrefectServer) -> dict[str, str]:
    """This process's environment without civiclake or Prefect settings, pointed at ``server``."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CIVICLAKE_", "PREFECT_")) and key != "SOCRATA_APP_TOKEN"
    }
    env = server.env(base)
    env["COLUMNS"] = "200"  # rich wraps CLI messages at 80 columns otherwise
    return env


def prefect_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``prefect ARGS`` from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_deploy(server: PrefectServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``civiclake deploy [args]`` from the repo root against ``server``."""
    return subprocess.run(
        [sys.executable, "-m", "civiclake.cli", "deploy", *args],
        cwd=ROOT,
        env=clean_env(server),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def start_worker(pool: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``prefect worker start --pool POOL`` from the repo root, its output in ``log_path``;
    a session of its own, so its flow-run subprocesses are stopped with it."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
