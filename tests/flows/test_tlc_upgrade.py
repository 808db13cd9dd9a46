"""Upgrade: TLC tables made by the code before the one pipeline (the wheel in tests/fixtures,
its CLI in a subprocess on the same CIVICLAKE_HOME) keep loading with the current code: the
same contents, no duplicates, the old months left alone, the warehouse in step."""

from __future__ import annotations

import subprocess
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.pipeline.commit import LOAD_MARKER
from civiclake.warehouse import open_warehouse
from testsupport.old_civiclake import run_old_cli

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

ROOT = Path(__file__).resolve().parents[2]
YELLOW = ROOT.parent / "shared" / "data" / "tlc" / "yellow_tripdata_2020-07_sample.csv"
TABLE, REJECTS = "tlc.yellow_trips", "tlc.yellow_trips_rejects"
LOAD_COLUMNS = ("load_run_id", "loaded_at")


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def old_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI of the code before the one pipeline, on this test's CIVICLAKE_HOME and server."""
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    return run_old_cli(tmp_path, *args, env=env)


def month_file(tmp_path: Path, month: int) -> Path:
    """40 trips of the real July sample moved to ``month`` of 2020, + 2 rejects (backwards)."""
    header, *lines = YELLOW.read_text().splitlines()
    bad = [
        f"1,2020-07-0{d} 10:00:00,2020-07-0{d} 09:00:00,1,1.5,1,N,238,75,2,8,0.5,0.5,0,0,0.3,9.3,0"
        for d in (2, 3)
    ]
    path = tmp_path / f"yellow_tripdata_2020-{month:02d}.csv"
    rows = [x.replace("2020-07-", f"2020-{month:02d}-") for x in lines[:40] + bad]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def contents(name: str) -> pa.Table:
    """The table's rows without the load columns, in a stable order."""
    table = tables.load_catalog(get_settings()).load_table(name).scan().to_arrow()
    keep = [c for c in table.column_names if c not in LOAD_COLUMNS]
    return table.select(keep).sort_by([(c, "ascending") for c in keep])


def test_tables_made_by_the_old_code_keep_loading(tmp_path: Path) -> None:
    july, august = month_file(tmp_path, 7), month_file(tmp_path, 8)
    old = old_cli(tmp_path, "taxi", "run", "--from-file", str(july))
    assert old.returncode == 0, old.stdout + old.stderr
    lake = get_settings().lake()
    # the old code's own stage layout: proof the subprocess ran the code before the reshape
    assert lake.exists(lake.join("stage", "tlc", "yellow", "2020-07", "trips.parquet"))
    old_rows, old_rejects = contents(TABLE), contents(REJECTS)
    assert (old_rows.num_rows, old_rejects.num_rows) == (40, 2)

    # the current code: a new month beside the old one, then the old month again
    for path in (august, july):
        result = cli("taxi", "run", "--from-file", str(path))
        assert result.exit_code == 0, result.output
    catalog = tables.load_catalog(get_settings())
    snapshot = catalog.load_table(TABLE).current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.additional_properties.get(f"civiclake.{LOAD_MARKER}") == "1"
    rows, rejects = contents(TABLE), contents(REJECTS)
    assert (rows.num_rows, rejects.num_rows) == (80, 4)  # no duplicates
    july_rows = rows.filter(pc.less(rows.column("tpep_pickup_datetime"), datetime(2020, 8, 1)))
    assert july_rows.equals(old_rows)  # the same contents, written again by the new code
    july_rejects = rejects.filter(pc.equal(rejects.column("source_month"), date(2020, 7, 1)))
    assert july_rejects.equals(old_rejects)
    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count(TABLE) == 80
        assert warehouse.count(REJECTS) == 4
