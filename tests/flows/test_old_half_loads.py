"""Upgrade after a crash: the code before the one pipeline (the wheel in tests/fixtures, its CLI
in a subprocess on the same home) dies between a load's two commits (table committed, rejects
not), then the current code's next run completes the rejects commit from the files the old
code staged (``pipeline.legacy``), for each source: the rejects of the crashed load appear,
committed under its run id, and nothing is duplicated."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_tlc_upgrade import month_file
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.pipeline.commit import LOAD_MARKER
from civiclake.sources import bnt
from civiclake.testing.socrata import SocrataServer, bnt_rows
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_row, sample_rows
from testsupport.old_civiclake import CRASHED, run_old_cli

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

RUN_ID = tables.SNAPSHOT_PROPERTY_PREFIX + "run-id"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def old_crash(tmp_path: Path, table: str, crash_at: str, *args: str, **env: str) -> str:
    """Run the old CLI until its rejects commit, which never happens; the id of the crashed
    run, which committed ``table``."""
    from prefect.settings import PREFECT_API_URL

    done: subprocess.CompletedProcess[str] = run_old_cli(
        tmp_path,
        *args,
        env={"PREFECT_API_URL": str(PREFECT_API_URL.value()), "DO_NOT_TRACK": "1", **env},
        crash_at=crash_at,
    )
    assert done.returncode == CRASHED, done.stdout + done.stderr
    snapshot = tables.load_catalog(get_settings()).load_table(table).current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    props = snapshot.summary.additional_properties
    assert f"civiclake.{LOAD_MARKER}" not in props  # made by the old code
    return props[RUN_ID]


def scan(name: str) -> pa.Table:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow()


def rejects_runs(name: str) -> list[str]:
    """The run ids of the rejects table's snapshots, oldest first."""
    if not tables.load_catalog(get_settings()).table_exists(name):
        return []
    table = tables.load_catalog(get_settings()).load_table(name)
    return [
        s.summary.additional_properties.get(RUN_ID, "")
        for s in table.metadata.snapshots
        if s.summary is not None
    ]


def distinct(rows: pa.Table, key: list[str]) -> int:
    return rows.select(key).group_by(key).aggregate([]).num_rows


def test_a_bnt_load_the_old_code_left_half_done_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = bnt_rows(date(2024, 3, 20), 3)
    portal = [*first, {**first[0], "hour": "24"}]  # one reject, dated on the first day
    key = ["plaza_id", "date", "hour", "direction"]
    with SocrataServer({bnt.DATASET_ID: portal}) as server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        run_id = old_crash(
            tmp_path, bnt.TABLE, "civiclake.sources.bnt:commit_rejects", "bnt", "run",
            "--start-date", "2024-03-20", "--stop-date", "2024-03-22",
            CIVICLAKE_SOCRATA_URL=server.url,
        )  # fmt: skip
        assert scan(bnt.TABLE).num_rows == 2 * 480
        assert run_id not in rejects_runs(bnt.REJECTS_TABLE)  # the half load

        # the new code loads another day: the old load's rejects are completed first
        result = cli("bnt", "run", "--start-date", "2024-03-22", "--stop-date", "2024-03-23")
        assert result.exit_code == 0, result.output

    assert run_id in rejects_runs(bnt.REJECTS_TABLE)
    rejects = scan(bnt.REJECTS_TABLE)
    assert rejects.column("reason").to_pylist() == ["hour missing or outside 0-23: '24'"]
    assert rejects.column("load_run_id").to_pylist() == [run_id]
    rows = scan(bnt.TABLE)
    assert rows.num_rows == distinct(rows, key) == 3 * 480


def test_a_tlc_month_the_old_code_left_half_done_is_completed(tmp_path: Path) -> None:
    table, rejects_table = "tlc.yellow_trips", "tlc.yellow_trips_rejects"
    july, august = month_file(tmp_path, 7), month_file(tmp_path, 8)
    run_id = old_crash(
        tmp_path,
        table,
        "civiclake.flows.tlc:commit_rejects",
        "taxi",
        "run",
        "--from-file",
        str(july),
    )
    assert scan(table).num_rows == 40
    assert run_id not in rejects_runs(rejects_table)

    # the new code loads August: July's rejects are completed first, then August's committed
    result = cli("taxi", "run", "--from-file", str(august))
    assert result.exit_code == 0, result.output

    assert run_id in rejects_runs(rejects_table)
    rejects = scan(rejects_table)
    months = sorted(str(m) for m in rejects.column("source_month").to_pylist())
    assert months == ["2020-07-01"] * 2 + ["2020-08-01"] * 2
    rows = scan(table)
    assert rows.num_rows == distinct(rows, rows.column_names[:6]) == 80


def every_type_portal() -> tuple[list[dict[str, Any]], SocrataServer]:
    """The every-type sample (25 rows, one a reject) on a replay server (not started)."""
    rows = sample_rows(25)
    rows[7] = {**rows[7], "count": "seven"}  # a reject
    server = SocrataServer()
    server.add_dataset(DATASET, rows, columns=COLUMNS, name="Every type")
    return rows, server


def test_a_socrata_first_load_the_old_code_left_half_done_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, rejects_table = "socrata.abcd_1234", "socrata.abcd_1234_rejects"
    _, server = every_type_portal()
    with server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        run_id = old_crash(
            tmp_path,
            table,
            "civiclake.flows.socrata:commit_rejects",
            "socrata",
            "run",
            DATASET,
            CIVICLAKE_SOCRATA_URL=server.url,
        )
        assert scan(table).num_rows == 24
        assert rejects_runs(rejects_table) == []  # the old code never created it

        # nothing new at the source: the re-run completes the rejects and commits nothing else
        again = cli("socrata", "run", DATASET)
        assert again.exit_code == 0, again.output

    assert rejects_runs(rejects_table) == [run_id]
    rejects = scan(rejects_table)
    assert rejects.column("socrata_id").to_pylist() == ["row-00007"]
    assert scan(table).num_rows == distinct(scan(table), ["socrata_id"]) == 24


def test_an_old_half_load_whose_staged_rejects_are_gone_is_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The old stage zone pruned after the crash: the repair cannot complete; it says so (the
    next load of those rows replaces their rejects) and the new load goes on."""
    import shutil

    from civiclake.pipeline.commit import repair

    table, rejects_table = "tlc.yellow_trips", "tlc.yellow_trips_rejects"
    run_id = old_crash(
        tmp_path,
        table,
        "civiclake.flows.tlc:commit_rejects",
        "taxi",
        "run",
        "--from-file",
        str(month_file(tmp_path, 7)),
    )
    lake = get_settings().lake()
    shutil.rmtree(lake.local_path(lake.join("stage", "tlc")) or "")
    catalog = tables.load_catalog(get_settings())
    with caplog.at_level("WARNING", logger="civiclake.pipeline"):
        assert not repair(catalog, lake, table, rejects_table)
    lines = [r.getMessage() for r in caplog.records if run_id in r.getMessage()]
    assert len(lines) == 1 and "staged rejects are gone" in lines[0]

    # the next load of July replaces its rejects
    result = cli("taxi", "run", "--from-file", str(month_file(tmp_path, 7)))
    assert result.exit_code == 0, result.output
    assert scan(rejects_table).num_rows == 2 and scan(table).num_rows == 40


def test_a_socrata_merge_the_old_code_left_half_done_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental (merge by id) load: its rejects slice is the ids the old code staged."""
    table, rejects_table = "socrata.abcd_1234", "socrata.abcd_1234_rejects"
    rows, server = every_type_portal()
    with server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        first = run_old_cli(
            tmp_path, "socrata", "run", DATASET, env={"CIVICLAKE_SOCRATA_URL": server.url}
        )
        assert first.returncode == 0, first.stdout + first.stderr
        # a revised row, and the reject revised into another reject
        rows[2] = {**sample_row(2, minutes=600), "zip": "NEW02"}
        rows[7] = {**sample_row(7, minutes=601), "count": "eight"}
        server.add_dataset(DATASET, rows, columns=COLUMNS)
        run_id = old_crash(
            tmp_path,
            table,
            "civiclake.flows.socrata:commit_rejects",
            "socrata",
            "run",
            DATASET,
            CIVICLAKE_SOCRATA_URL=server.url,
        )
        assert run_id not in rejects_runs(rejects_table)

        again = cli("socrata", "run", DATASET)
        assert again.exit_code == 0, again.output

    assert run_id in rejects_runs(rejects_table)
    rejects = scan(rejects_table)
    assert rejects.column("socrata_id").to_pylist() == ["row-00007"]
    assert '"eight"' in rejects.column("raw_record")[0].as_py()
    loaded = scan(table)
    assert loaded.num_rows == distinct(loaded, ["socrata_id"]) == 24
