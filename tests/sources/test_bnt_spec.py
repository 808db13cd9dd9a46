"""The B&T spec's contract on real Arrow data (no network): its pure transform on small
batches (valid rows, each rule and reason, the raw record kept), its rejects layout, its
readers (CSV export, JSON array / NDJSON) staged by the Arrow engine into real tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from civiclake import tables
from civiclake.config import get_settings
from civiclake.errors import SourceError
from civiclake.lake import Lake
from civiclake.pipeline import RAW_RECORD, REJECT_REASON, RunContext, Staged, output_schema, split
from civiclake.pipeline.engines import get_stage
from civiclake.sources import bnt

CTX = bnt.context(
    "run-1",
    "test",
    datetime(2024, 1, 1, tzinfo=UTC),
    bnt.LoadRange(date(2024, 3, 1), date(2024, 3, 3)),
)


@dataclass
class Normalized:
    """A transform's output split as the engine splits it."""

    out: pa.RecordBatch
    valid: pa.Table
    rejects: pa.Table


def normalize(rows: list[dict[str, Any]], ctx: RunContext = CTX) -> Normalized:
    out = bnt.SPEC.transform(bnt.records_batch(rows), ctx)
    assert out.schema == output_schema(bnt.SPEC)
    valid, rejects = split(bnt.SPEC, out, ctx)
    return Normalized(out, valid, rejects)


def row(**overrides: str) -> dict[str, str]:
    base = {
        "plaza_id": "21",
        "date": "2024-03-01T00:00:00.000",
        "hour": "5",
        "direction": "I",
        "vehicles_e_zpass": "2673",
        "vehicles_vtoll": "567",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v != "<absent>"}


def test_valid_row_is_typed_and_mapped() -> None:
    result = normalize([row(), row(plaza_id="7", direction="o")])
    assert result.rejects.num_rows == 0
    assert result.valid.schema == bnt.ARROW_SCHEMA
    first, second = result.valid.to_pylist()
    assert first["plaza_id"] == 21 and first["facility"] == "RFK Bridge Bronx Plaza"
    assert first["date"] == date(2024, 3, 1) and first["hour"] == 5
    assert first["vehicles_e_zpass"] == 2673 and first["vehicles_vtoll"] == 567
    assert first["load_run_id"] == "run-1" and first["load_source"] == "test"
    assert second["facility"] == "Queens Midtown Tunnel" and second["direction"] == "O"


@pytest.mark.parametrize(
    ("old", "new"),
    [(1, 21), (2, 22), (3, 23), (4, 24), (5, 25), (6, 26), (7, 27), (8, 28), (9, 29), (11, 30)],
)
def test_both_plaza_schemes_map_to_one_facility(old: int, new: int) -> None:
    result = normalize([row(plaza_id=str(old)), row(plaza_id=str(new))])
    facilities = result.valid.column("facility").to_pylist()
    assert facilities[0] == facilities[1] == bnt.PLAZA_FACILITIES[new]
    assert facilities[0] is not None


def test_vehicles_cash_is_the_old_name_of_vtoll() -> None:
    record = row(vehicles_vtoll="<absent>")
    record["vehicles_cash"] = "42"
    result = normalize([record])
    assert result.valid.column("vehicles_vtoll").to_pylist() == [42]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"vehicles_e_zpass": "12a"}, "vehicles_e_zpass missing or not a non-negative integer"),
        ({"vehicles_vtoll": "-3"}, "vehicles_vtoll missing or not a non-negative integer"),
        ({"hour": "24"}, "hour missing or outside 0-23: '24'"),
        ({"hour": "<absent>"}, "hour missing"),
        ({"direction": "X"}, "direction not I or O: 'X'"),
        ({"plaza_id": "<absent>"}, "plaza_id missing"),
        ({"plaza_id": "abc"}, "plaza_id missing or not a positive integer: 'abc'"),
        ({"date": "not-a-date"}, "date missing or not a date"),
        ({"date": "2024-05-01T00:00:00.000"}, "outside the load range 2024-03-01/2024-03-03"),
    ],
)
def test_invalid_rows_are_rejected_with_reason(overrides: dict[str, str], reason: str) -> None:
    bad = row(**overrides)
    result = normalize([row(), bad, row(hour="6")])
    assert result.valid.num_rows == 2
    (reject,) = result.rejects.to_pylist()
    assert reason in reject["reason"]
    assert json.loads(reject["raw_record"]) == bad
    assert reject["load_range"] == "2024-03-01/2024-03-03"


def test_reject_outside_range_is_undated_so_reloads_replace_it() -> None:
    result = normalize([row(date="2025-01-01T00:00:00.000")])
    assert result.rejects.column("date").to_pylist() == [None]
    inside = normalize([row(hour="99")])
    assert inside.rejects.column("date").to_pylist() == [date(2024, 3, 1)]


def test_unknown_plaza_is_loaded_without_facility() -> None:
    result = normalize([row(plaza_id="99")])
    assert result.valid.column("facility").to_pylist() == [None]
    assert bnt.SPEC.observe(result.valid)["unknown_plaza_ids"] == {99}


def test_numbers_given_as_json_numbers_are_accepted() -> None:
    record: dict[str, object] = dict(row())
    record["vehicles_e_zpass"] = 10
    result = normalize([record])  # type: ignore[list-item]
    assert result.valid.column("vehicles_e_zpass").to_pylist() == [10]


def test_canonical_field_names() -> None:
    assert [
        bnt.canonical_field(h)
        for h in (
            "Plaza ID",
            "Date (MM/DD/YYYY)",
            "Hour",
            "Direction",
            "# Vehicles - E-ZPass",
            "# Vehicles - VToll",
            "# Vehicles - Cash",
        )
    ] == [
        "plaza_id",
        "date",
        "hour",
        "direction",
        "vehicles_e_zpass",
        "vehicles_vtoll",
        "vehicles_vtoll",
    ]


def _stage(tmp_path: Path, name: str, content: str) -> tuple[Lake, Staged]:
    source = tmp_path / name
    source.write_text(content)
    lake = get_settings().lake()
    urls = bnt.stage_file(lake, str(source), run_id="r1")
    table, rejects = bnt.SPEC.ensure_tables(tables.load_catalog(get_settings()))
    ctx = bnt.context("r1", f"file:{name}", datetime.now(UTC))
    staged = get_stage("arrow")(bnt.BntSpec(), lake, urls, ctx, table=table, rejects_table=rejects)
    return lake, staged


def _read(lake: Lake, urls: list[str]) -> pa.Table:
    parts = []
    for url in urls:
        with lake.open(url) as handle:
            parts.append(pq.read_table(handle))
    return pa.concat_tables(parts)


CSV = (
    "Plaza ID,Date (MM/DD/YYYY),Hour,Direction,# Vehicles - E-ZPass,# Vehicles - VToll,Extra\n"
    "21,03/16/2024,0,I,2673,567,x\n"
    "1,03/17/2010,23,O,10,n/a,y\n"
    "30,03/18/2024,1,O,5,6,z\n"
)


def test_stage_csv_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lake, result = _stage(tmp_path, "export.csv", CSV)
    assert (result.rows_read, result.rows_valid, result.rows_rejected) == (3, 2, 1)
    assert result.observed["days"] == {date(2024, 3, 16), date(2024, 3, 18)}
    assert "ignoring fields not in the B&T schema: extra" in caplog.text
    valid = _read(lake, result.data_urls).sort_by("plaza_id")
    assert valid.column("plaza_id").to_pylist() == [21, 30]
    rejects = _read(lake, result.rejects_urls)
    (reject,) = rejects.to_pylist()
    assert "vehicles_vtoll" in reject["reason"] and "'n/a'" in reject["reason"]
    assert json.loads(reject["raw_record"])["# Vehicles - VToll"] == "n/a"
    assert reject["load_range"] == "file:export.csv"


def test_stage_json_array_and_ndjson(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [row(), row(hour="1", vehicles_vtoll="<absent>"), row(hour="2", extra="e")]
    rows[1]["vehicles_cash"] = "9"
    _, array_result = _stage(tmp_path, "export.json", json.dumps(rows))
    assert (array_result.rows_read, array_result.rows_valid) == (3, 3)
    assert "ignoring fields not in the B&T schema: extra" in caplog.text
    _, nd_result = _stage(tmp_path, "export.ndjson", "\n".join(json.dumps(r) for r in rows))
    assert (nd_result.rows_read, nd_result.rows_valid) == (3, 3)


def test_stage_file_errors(tmp_path: Path) -> None:
    lake = get_settings().lake()
    with pytest.raises(SourceError, match="no such file"):
        bnt.stage_file(lake, str(tmp_path / "missing.csv"), run_id="r")
    with pytest.raises(SourceError, match="unsupported file type"):
        bnt.stage_file(lake, str(tmp_path / "x.xlsx"), run_id="r")
    with pytest.raises(SourceError, match="none of the B&T columns"):
        _stage(tmp_path, "wrong.csv", "a,b\n1,2\n")
    with pytest.raises(SourceError, match=r"not readable JSON: .*Malformed JSON"):
        _stage(tmp_path, "broken.json", '[{"plaza_id": "1"')


def test_load_range_text() -> None:
    r = bnt.LoadRange(date(2023, 11, 20), date(2024, 2, 1))
    assert str(r) == "2023-11-20/2024-02-01"


def test_a_date_more_than_a_day_ahead_is_a_reject_with_its_reason() -> None:
    """Issue 17: a stray future date is a reject, never the end of a file's range."""
    from datetime import timedelta

    today = date.today()
    rows = [
        row(date=(today + timedelta(days=1)).isoformat()),  # tomorrow: time zones
        row(date=(today + timedelta(days=2)).isoformat()),
        row(date="03/02/2099"),
    ]
    ctx = bnt.context("r", "t", datetime.now(UTC))  # a file load: no range
    result = normalize(rows, ctx)
    assert result.valid.column("date").to_pylist() == [today + timedelta(days=1)]
    assert result.rejects.column("reason").to_pylist() == [
        f"date {today + timedelta(days=2)} is more than a day in the future",
        "date 2099-03-02 is more than a day in the future",
    ]
    assert result.rejects.column("date").to_pylist() == [None, None]


def test_one_batch_in_one_out_reason_and_raw_record_only_on_rejects() -> None:
    """The contract: every row comes out once, in order; a valid row has no reason and no raw
    record; a rejected one lists every rule it failed and keeps its record as received."""
    import pickle

    bad = row(hour="x", direction="N", vehicles_vtoll="-1")
    result = normalize([row(), bad, row(hour="7")])
    out = result.out
    assert out.num_rows == 3
    assert out.column(REJECT_REASON).to_pylist()[0] is None
    assert out.column(RAW_RECORD).to_pylist()[0] is None
    assert out.column("hour").to_pylist()[2] == 7
    assert out.column(REJECT_REASON).to_pylist()[1] == (
        "hour missing or outside 0-23: 'x'; direction not I or O: 'N'; "
        "vehicles_vtoll missing or not a non-negative integer: '-1'"
    )
    assert json.loads(out.column(RAW_RECORD).to_pylist()[1]) == bad
    (reject,) = result.rejects.to_pylist()
    assert reject["rejected_at"] == CTX.now and reject["load_run_id"] == "run-1"
    assert reject["load_source"] == "test" and reject["date"] == date(2024, 3, 1)
    # no closure, no state the transform depends on: spec and context travel by value
    spec, ctx = pickle.loads(pickle.dumps((bnt.BntSpec(), CTX)))
    again = spec.transform(bnt.records_batch([row(), bad, row(hour="7")]), ctx)
    assert again.equals(out)


def test_current_name_wins_over_the_old_one_when_both_are_given() -> None:
    both = row(vehicles_vtoll="5")
    both["vehicles_cash"] = "9"
    only_old = row(vehicles_vtoll="<absent>")
    only_old["vehicles_cash"] = "9"
    result = normalize([both, only_old])
    assert result.valid.column("vehicles_vtoll").to_pylist() == [5, 9]
