"""Upgrade: B&T tables written by the code before the one-pipeline reshape (the wheel built at
6893fc3, run in a subprocess on the same home) keep loading with the new code: same contents,
no duplicates, the old table's high-water mark read from file statistics, then written as a
snapshot property from the first new load on."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.sources.bnt_fetch import high_water_mark
from civiclake.tables import HWM_PROPERTY
from civiclake.testing.socrata import SocrataServer, bnt_rows
from testsupport.old_civiclake import run_old_cli
from testsupport.prefect_server import PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]
FIRST = date(2024, 3, 20)
KEY = ("plaza_id", "date", "hour", "direction")


def old_civiclake(tmp_path: Path, prefect: PrefectServer, *args: str) -> None:
    """``civiclake ARGS`` as the old code runs it (same venv dependencies, same home)."""
    done = run_old_cli(tmp_path, *args, env={"PREFECT_API_URL": prefect.api_url})
    assert done.returncode == 0, done.stdout + done.stderr


def portal(days: int) -> list[dict[str, str]]:
    rows = bnt_rows(FIRST, days)
    return [*rows, {**rows[0], "hour": "24"}]  # one reject, dated on the first day


def test_tables_written_by_the_old_code_keep_loading(
    tmp_path: Path, live_prefect: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SocrataServer({bnt.DATASET_ID: portal(2)}) as server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        old_civiclake(
            tmp_path, live_prefect, "bnt", "run", "--start-date", "2024-03-20",
            "--stop-date", "2024-03-22",
        )  # fmt: skip
        catalog = tables.load_catalog(get_settings())
        old = catalog.load_table(bnt.TABLE)
        assert old.scan().count() == 2 * 480
        assert HWM_PROPERTY not in str(old.current_snapshot().summary)  # the old code's table
        assert high_water_mark(get_settings()) == date(2024, 3, 21)  # from file statistics

        # the portal gains a day; the new code's incremental run (no dates) picks it up
        server.add_dataset(bnt.DATASET_ID, portal(3))
        result = CliRunner().invoke(app, ["bnt", "run"])
        assert result.exit_code == 0, result.output

    table = tables.load_catalog(get_settings()).load_table(bnt.TABLE)
    rows = table.scan().to_arrow()
    assert rows.num_rows == 3 * 480
    keys = rows.select(list(KEY)).group_by(list(KEY)).aggregate([]).num_rows
    assert keys == rows.num_rows  # no duplicates
    expected = {
        (int(r["plaza_id"]), int(r["hour"]), r["direction"], int(r["vehicles_e_zpass"]))
        for r in bnt_rows(FIRST, 3)
    }
    got = set(
        zip(
            rows.column("plaza_id").to_pylist(),
            rows.column("hour").to_pylist(),
            rows.column("direction").to_pylist(),
            rows.column("vehicles_e_zpass").to_pylist(),
            strict=True,
        )
    )
    assert got == expected
    assert sorted(pc.unique(rows.column("date")).to_pylist()) == [
        date(2024, 3, 20),
        date(2024, 3, 21),
        date(2024, 3, 22),
    ]
    # the old load's reject was replaced by the new load's, not kept beside it
    rejects = tables.load_catalog(get_settings()).load_table(bnt.REJECTS_TABLE).scan().to_arrow()
    assert rejects.column("reason").to_pylist() == ["hour missing or outside 0-23: '24'"]
    # from now on the high-water mark is a snapshot property
    summary = table.current_snapshot().summary
    assert summary.additional_properties[tables.SNAPSHOT_PROPERTY_PREFIX + HWM_PROPERTY] == (
        "2024-03-22"
    )
    assert high_water_mark(get_settings()) == date(2024, 3, 22)


def test_the_high_water_mark_written_with_a_load() -> None:
    """What the snapshot property says after a load, from the previous mark, the slice the load
    replaced and the days it loaded (None: unknown, the next plan reads file statistics)."""
    from datetime import timedelta

    from civiclake.flows.bnt import _next_high_water_mark
    from civiclake.slices import Window, Windows

    d = [FIRST + timedelta(days=n) for n in range(10)]
    march = Window("date", d[0], d[9])
    assert _next_high_water_mark(None, march, {d[1], d[3]}) == d[3]  # a first load
    assert _next_high_water_mark(d[9], march, {d[1]}) == d[9]  # the newest rows stay
    assert _next_high_water_mark(d[5], march, {d[1], d[3]}) == d[3]  # replaced: the range's
    assert _next_high_water_mark(d[5], march, set()) is None  # emptied (--allow-empty)
    file_days = Windows.of_days("date", [d[2], d[6]])
    assert _next_high_water_mark(d[6], file_days, {d[2], d[6]}) == d[6]
    assert _next_high_water_mark(d[4], file_days, {d[2], d[6]}) == d[6]
    assert _next_high_water_mark(d[8], file_days, {d[2], d[6]}) == d[8]
