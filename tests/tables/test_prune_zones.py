"""``civiclake maintain`` prunes the raw and stage zones: load folders older than the
retention go, a series' latest load and young folders stay, ``--dry-run`` only lists."""

from __future__ import annotations

import os
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.pipeline.commit import load_url
from civiclake.sources import bnt, bnt_fetch, tlc

DAY = 86_400.0


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def put(url: str, age_days: float, data: bytes = b"x" * 100) -> Path:
    """A file of the lake, last modified ``age_days`` ago."""
    path = Path(url.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def test_maintain_prunes_old_load_folders_and_keeps_the_latest(civiclake_home: Path) -> None:
    lake = get_settings().lake()
    raw = {  # three B&T fetches: 30, 10 and 9 days old; the 9-day one is the latest
        age: put(f"{bnt_fetch.raw_dir(lake, 'data.ny.gov', 'qzve-kjga', f'r{age}')}/p0.json", age)
        for age in (30, 10, 9)
    }
    stage = {  # their stage folders, and a run of today
        age: put(f"{bnt.stage_dir(lake, f'r{age}')}/valid.parquet", age) for age in (30, 10, 0.1)
    }
    green = tlc.spec_for("green")
    months = {  # TLC staged loads (one folder per run): an old one, and a newer one (the latest)
        m: put(load_url(lake, green.table, f"run-2020-{m:02d}"), age)
        for m, age in ((9, 20), (10, 8))
    }
    writing = put(f"{bnt_fetch.raw_dir(lake, 'data.ny.gov', 'qzve-kjga', 'r40')}/p0.json", 40)
    put(f"{writing.parent}/.p1.json.tmp", 40)  # an atomic write in progress: never removed

    dry = cli("maintain", "--dry-run")
    assert dry.exit_code == 0, dry.output
    listed = {
        line.split()[3] for line in dry.stdout.splitlines() if line.startswith("would remove ")
    }
    expected = {raw[30], raw[10], stage[30], stage[10], months[9]}
    assert listed == {f"file://{p}" for p in expected}
    assert "would remove 5 load folder(s) older than 7 days, 5 files" in dry.stdout
    assert all(p.exists() for p in (*raw.values(), *stage.values(), *months.values()))

    done = cli("maintain")
    assert done.exit_code == 0, done.output
    assert "removed 5 load folder(s)" in done.stdout
    assert not any(p.exists() or p.parent.exists() for p in expected)
    for kept in (raw[9], stage[0.1], months[10], writing):
        assert kept.exists()

    longer = cli("maintain", "--dry-run", "--raw-retain-days", "100")
    assert "would remove 0 load folder(s)" in longer.stdout


def test_maintain_of_named_tables_leaves_the_zones_alone(civiclake_home: Path) -> None:
    lake = get_settings().lake()
    old = put(f"{bnt.stage_dir(lake, 'old')}/valid.parquet", 30)
    put(f"{bnt.stage_dir(lake, 'new')}/valid.parquet", 0)
    result = cli("maintain", "mta.nope")
    assert result.exit_code != 0 and old.exists()
    assert cli("maintain", "--raw-retain-days", "0").exit_code == 2  # a running load's files
