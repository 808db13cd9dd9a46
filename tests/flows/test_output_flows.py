"""What a run prints (issue 18). A failing flow ends the command with its one ``error:`` line: no
Python traceback on the console, the user's own file named once. A summary names the partitions
the load really changed and the snapshot it committed; no PyIceberg warning on the way."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.testing.socrata import SocrataServer, bnt_rows

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "bnt_sample.csv"
TLC_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tlc"

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


GREEN_GZ = gzip.compress(
    b"VendorID,lpep_pickup_datetime,lpep_dropoff_datetime\n"
    + b"2,2020-10-01 00:00:00,2020-10-01 00:10:00\n" * 20_000
)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        # cut off: the gzip stream ends early
        ("green_tripdata_2020-10.csv.gz", GREEN_GZ[: len(GREEN_GZ) // 2], "cannot read {path}: "),
        # wrong content: a yellow file named as a green one
        (
            "green_tripdata_2020-10.csv",
            (TLC_DATA / "yellow_tripdata_2020-07_sample.csv").read_bytes(),
            "{path} is not a green trip file: no column lpep_pickup_datetime",
        ),
        # unreadable: not Parquet at all
        ("green_tripdata_2020-10.parquet", b"not parquet\n", "cannot read {path}: "),
    ],
    ids=["cut-off", "wrong-content", "unreadable"],
)
def test_a_tlc_file_that_does_not_stage_names_the_users_file(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    done = civiclake("taxi", "run", "--from-file", str(path))
    assert done.returncode == 1, done.stderr
    last = assert_ends_with_one_error(done.stderr)
    assert says.format(path=path) in last, last
    assert "raw/" not in last and "from-file/" not in last  # not the raw-zone copy


@pytest.fixture
def bnt_portal(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocrataServer]:
    with SocrataServer({"qzve-kjga": bnt_rows(date.today() - timedelta(days=20), 21)}) as srv:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", srv.url)
        yield srv


def summary_value(output: str, metric: str) -> str:
    match = re.search(rf"│ {metric}\s*│\s*(.+?)\s*│", output)
    assert match, output
    return match.group(1)


def test_an_incremental_bnt_summary_names_the_partitions_it_changed(
    bnt_portal: SocrataServer,
) -> None:
    """The sample file holds 2024-03-01..14; the incremental run then replaces [2024-03-07,
    today): it deletes a week of 2024-03 and adds the portal's last 20 days. Its range spans
    ~33 months; it changed 2024-03 and the months of those 20 days, nothing else."""
    runner = CliRunner()
    first = runner.invoke(app, ["bnt", "run", "--from-file", str(SAMPLE_CSV)])
    assert first.exit_code == 0, first.output
    assert summary_value(first.stdout, "partitions touched") == "2024-03"
    again = runner.invoke(app, ["bnt", "run"])
    assert again.exit_code == 0, again.output
    today = date.today()
    days = [today - timedelta(days=n) for n in range(1, 21)]
    months = sorted({"2024-03", *(d.strftime("%Y-%m") for d in days)})
    assert summary_value(again.stdout, "partitions touched") == ", ".join(months)
    table = tables.load_catalog(get_settings()).load_table("mta.bnt_traffic_hourly")
    snapshot_id = str(table.current_snapshot().snapshot_id)
    assert summary_value(again.stdout, "snapshot id") == snapshot_id


def test_the_tlc_summary_has_partitions_and_snapshot_and_no_warning(tmp_path: Path) -> None:
    sample = tmp_path / "yellow_tripdata_2020-07_sample.csv"
    shutil.copy(TLC_DATA / "yellow_tripdata_2020-07_sample.csv", sample)
    shutil.copy(TLC_DATA / "taxi_zone_lookup.csv", tmp_path / "taxi_zone_lookup.csv")
    done = civiclake("taxi", "run", "--from-file", str(sample))
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    table = tables.load_catalog(get_settings()).load_table("tlc.yellow_trips")
    snapshot_id = str(table.current_snapshot().snapshot_id)
    lines = done.stdout.splitlines()
    header = next(line for line in lines if "partitions touched" in line)
    row = next(line for line in lines if line.startswith("│ 2020-07"))
    cells = dict(
        zip(
            [c.strip() for c in re.split("[│┃]", header)[1:-1]],
            [c.strip() for c in row.split("│")[1:-1]],
            strict=True,
        )
    )
    assert cells["partitions touched"] == "2020-07"
    assert cells["snapshot id"] == snapshot_id


def test_bnt_run_portal_option_is_used(
    bnt_portal: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", "http://127.0.0.1:9")  # nothing listens
    day = date.today() - timedelta(days=3)
    result = CliRunner().invoke(
        app,
        ["bnt", "run", "--portal", bnt_portal.url, "--start-date", day.isoformat()],
    )
    assert result.exit_code == 0, result.output
    assert bnt_portal.requests, "the --portal server was not asked"
    table = tables.load_catalog(get_settings()).load_table("mta.bnt_traffic_hourly")
    assert table.scan().to_arrow().num_rows > 0


def test_socrata_options_a_loaded_table_cannot_honour_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows

    runner = CliRunner()
    with SocrataServer() as first, SocrataServer() as other:
        for srv in (first, other):
            srv.add_dataset(DATASET, sample_rows(12), columns=COLUMNS, name="Every type")
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", first.url)
        loaded = runner.invoke(
            app, ["socrata", "run", DATASET, "--partition", "month(created_date)"]
        )
        assert loaded.exit_code == 0, loaded.output
        table = tables.load_catalog(get_settings()).load_table("socrata.abcd_1234")
        snapshot = table.current_snapshot().snapshot_id

        again = runner.invoke(app, ["socrata", "run", DATASET, "--partition", "day(created_date)"])
        assert again.exit_code == 2
        assert "is partitioned by month(created_date)" in again.output
        assert len(again.output.strip().splitlines()) == 1
        same = runner.invoke(app, ["socrata", "run", DATASET, "--partition", "month(created_date)"])
        assert same.exit_code == 0, same.output

        other.requests.clear()
        mixed = runner.invoke(app, ["socrata", "run", DATASET, "--portal", other.url])
        assert mixed.exit_code == 2
        assert "the rows of two sources would be mixed" in mixed.output
        table.refresh()
        assert table.current_snapshot().snapshot_id == snapshot  # `same`: nothing new, no commit
        latest = table.current_snapshot().snapshot_id
        replaced = runner.invoke(app, ["socrata", "run", DATASET, "--portal", other.url, "--full"])
        assert replaced.exit_code == 0, replaced.output
        assert table.refresh().current_snapshot().snapshot_id != latest
