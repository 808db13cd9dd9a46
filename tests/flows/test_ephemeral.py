"""Without PREFECT_API_URL the CLI runs the flow on Prefect's ephemeral server, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "bnt_sample.csv"


@pytest.mark.slow
def test_cli_runs_in_ephemeral_mode(tmp_path: Path, civiclake_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "CIVICLAKE_HOME": str(civiclake_home),
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "COLUMNS": "200",
        }
    )
    command = [sys.executable, "-m", "civiclake.cli", "bnt", "run", "--from-file", str(SAMPLE_CSV)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting temporary server" in done.stdout + done.stderr
    assert "rows loaded" in done.stdout and "6,720" in done.stdout
    assert "rows rejected" in done.stdout
