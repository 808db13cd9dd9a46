"""The generic Socrata spec on the pipeline's contract: types from metadata, one batch in, one
batch out (reject reason and record as received on the rows that do not fit), the raw-page
reader, the newest update observed; no I/O in the transform."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from civiclake.config import get_settings
from civiclake.errors import ParameterError
from civiclake.pipeline import RAW_RECORD, REJECT_REASON, DatasetSpec, RunContext, split
from civiclake.sources import socrata_dataset as datasets
from civiclake.sources.socrata_transform import BATCH_ROWS
from civiclake.testing.socrata import tabular_view
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_row, sample_rows

NOW = datetime(2024, 3, 2, tzinfo=UTC)


def spec(**kwargs: str) -> datasets.DatasetSpec:
    view = tabular_view(DATASET, COLUMNS, "Sample", 10)
    return datasets.spec_from_view(view, portal="https://data.example.org", **kwargs)


def page(rows: list[dict]) -> pa.RecordBatch:
    """Rows as the API's JSON body in the raw zone, read as the pipeline's reader reads it."""
    lake = get_settings().lake()
    url = lake.join("raw", "socrata", "test", f"page-{uuid.uuid4().hex[:8]}.json")
    lake.write_bytes(url, orjson.dumps(rows))
    return pa.Table.from_batches(list(spec().read(lake, url))).combine_chunks().to_batches()[0]


def ctx(run_id: str = "r", source: str = "s") -> RunContext:
    return RunContext(run_id=run_id, source=source, now=NOW)


def transform(
    batch: pa.RecordBatch, the_spec: datasets.DatasetSpec, *, run_id: str, source: str
) -> tuple[pa.Table, pa.Table]:
    """The spec's transform (one batch out), split as every engine splits it."""
    context = ctx(run_id, source)
    out = the_spec.transform(batch, context)
    assert out.schema == the_spec.arrow_schema().append(
        pa.field(REJECT_REASON, pa.string())
    ).append(pa.field(RAW_RECORD, pa.string()))
    return split(the_spec, out, context)


def test_the_spec_implements_the_pipeline_contract() -> None:
    assert isinstance(spec(), DatasetSpec)
    assert spec().rejects_schema() == datasets.REJECTS_SCHEMA


def test_types_come_from_metadata() -> None:
    schema = spec().arrow_schema()
    assert schema.field("socrata_id").type == pa.string()
    assert schema.field("socrata_updated_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("zip").type == pa.string()
    assert schema.field("count").type == pa.decimal128(38, 9)
    assert schema.field("fare").type == pa.decimal128(38, 4)
    assert schema.field("share").type == pa.decimal128(38, 9)
    assert schema.field("flag").type == pa.bool_()
    assert schema.field("created_date").type == pa.timestamp("us")
    assert schema.field("closed_at").type == pa.timestamp("us")
    assert schema.field("reported_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("location").type == pa.string()
    assert schema.field("location_longitude").type == pa.float64()
    assert schema.field("old_location_latitude").type == pa.float64()
    assert schema.field("area").type == pa.string()
    assert "area_longitude" not in schema.names
    assert schema.field("website").type == pa.string()
    assert schema.field("blob").type == pa.string()  # unknown type: text
    assert schema.field("computed_region_efsh_h5xi").type == pa.decimal128(38, 9)


def test_values_are_exact_and_missing_keys_are_null() -> None:
    valid, rejects = transform(page(sample_rows(4)), spec(), run_id="r", source="s")
    assert rejects.num_rows == 0
    rows = valid.to_pylist()
    first, second = rows[0], rows[1]
    assert first["zip"] == "00000" and second["zip"] == "00001"  # leading zeros kept
    assert second["count"] == Decimal("3000000001")
    assert second["fare"] == Decimal("1.50")
    assert first["share"] is None and first["website"] is None  # omitted: NULL, not "None"
    assert second["share"] == Decimal("1.25")
    assert (first["flag"], second["flag"]) == (True, False)
    assert second["created_date"] == datetime(2024, 3, 2)
    assert second["closed_at"] == datetime(2024, 3, 2, 10, 30, 15, 250_000)
    assert second["reported_at"] == datetime(2024, 3, 2, 10, 0, tzinfo=UTC)
    assert json.loads(second["location"]) == {
        "type": "Point",
        "coordinates": [-73.75, 40.625],
    }
    assert (second["location_longitude"], second["location_latitude"]) == (-73.75, 40.625)
    assert json.loads(second["old_location"]) == {"type": "Point", "coordinates": [-74.1, 40.5]}
    assert json.loads(second["area"])["type"] == "Polygon"
    assert second["website"] == "https://example.org/1"
    assert second["computed_region_efsh_h5xi"] == Decimal("1")
    assert second["socrata_id"] == "row-00001"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("count", "twelve", "count: 'twelve' is not a valid number"),
        ("count", "0.1234567891", "count: '0.1234567891' is not a valid number"),  # > 9 decimals
        ("fare", "1.23456", "fare: '1.23456' is not a valid money"),
        ("flag", "maybe", "flag: 'maybe' is not a valid checkbox"),
        ("created_date", "03/16/2024", "created_date: '03/16/2024' is not a valid calendar_date"),
    ],
)
def test_values_that_do_not_fit_are_rejects(field: str, value: str, reason: str) -> None:
    rows = sample_rows(3)
    rows[1][field] = value
    valid, rejects = transform(page(rows), spec(), run_id="run-1", source="src")
    assert valid.column("socrata_id").to_pylist() == ["row-00000", "row-00002"]
    (reject,) = rejects.to_pylist()
    assert reject["socrata_id"] == "row-00001"
    assert reject["reason"].startswith(reason)
    assert json.loads(reject["raw_record"])[field] == value
    assert json.loads(reject["raw_record"])[":id"] == "row-00001"  # the record as received
    assert (reject["load_run_id"], reject["load_source"]) == ("run-1", "src")
    assert reject["rejected_at"] == NOW
    # one batch out: every row, the reason and record only on the one that does not fit
    out = spec().transform(page(rows), ctx("run-1", "src"))
    assert out.num_rows == 3
    assert out.column(REJECT_REASON).is_null().to_pylist() == [True, False, True]
    assert out.column(RAW_RECORD).is_null().to_pylist() == [True, False, True]
    assert out.column(field)[1].as_py() is None  # the value that does not fit: NULL


def test_every_failed_column_keeps_the_first_reason_and_a_valid_row_none() -> None:
    rows = sample_rows(2)
    rows[0]["count"], rows[0]["flag"] = "twelve", "maybe"
    out = spec().transform(page(rows), ctx())
    reasons = out.column(REJECT_REASON).to_pylist()
    assert reasons[0].startswith("count: 'twelve' is not a valid number") and reasons[1] is None


def test_numbers_beyond_float_precision_stay_exact() -> None:
    row = sample_row(1)
    row["count"] = "12345678901234567890.123456789"
    valid, _ = transform(page([row]), spec(), run_id="r", source="s")
    assert valid.column("count")[0].as_py() == Decimal("12345678901234567890.123456789")


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("erm2-nwe9", ("https://data.ny.gov", "erm2-nwe9")),
        (
            "https://data.cityofnewyork.us/resource/erm2-nwe9.json",
            ("https://data.cityofnewyork.us", "erm2-nwe9"),
        ),
        (
            "https://data.cityofchicago.org/Public-Safety/Crimes/ijzp-q8t2",
            ("https://data.cityofchicago.org", "ijzp-q8t2"),
        ),
        ("http://127.0.0.1:8080/resource/abcd-1234.json", ("http://127.0.0.1:8080", "abcd-1234")),
    ],
)
def test_dataset_references(reference: str, expected: tuple[str, str]) -> None:
    assert datasets.parse_dataset(reference, "https://data.ny.gov") == expected


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("erm2nwe9", "is not a dataset id"),
        ("https://data.cityofnewyork.us/about", "no dataset id"),
    ],
)
def test_malformed_references(reference: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        datasets.parse_dataset(reference, "https://data.ny.gov")


def test_partition_and_table_options() -> None:
    assert str(spec(partition="month(created_date)").partition) == "month(created_date)"
    assert spec().table == "socrata.abcd_1234"
    assert spec(table="nyc.sample").rejects_table == "nyc.sample_rejects"
    with pytest.raises(ParameterError, match="has no column 'nope'"):
        spec(partition="day(nope)")
    with pytest.raises(ParameterError, match="zip is text, not a date"):
        spec(partition="month(zip)")
    with pytest.raises(ParameterError, match="use month"):
        spec(partition="week(created_date)")


def test_a_view_that_is_not_tabular_is_refused() -> None:
    view = {"id": DATASET, "name": "A chart", "assetType": "chart", "viewType": "tabular"}
    with pytest.raises(ParameterError, match="is a chart"):
        datasets.spec_from_view(view, portal="https://x")


def test_a_truncated_page_is_a_body_error_naming_it() -> None:
    from civiclake.sources.socrata import BodyError

    lake = get_settings().lake()
    url = lake.join("raw", "socrata", "test", "page-000001.json")
    body = orjson.dumps(sample_rows(3))
    lake.write_bytes(url, body[: len(body) // 2])
    message = rf"^{re.escape(url)}: not a complete JSON array of rows \(\w+\)$"
    with pytest.raises(BodyError, match=message):
        list(spec().read(lake, url))
    lake.write_bytes(url, b"[]")
    assert sum(b.num_rows for b in spec().read(lake, url)) == 0


def test_the_reader_yields_a_raw_page_of_the_lake_in_batches() -> None:
    lake = get_settings().lake()
    url = lake.join("raw", "socrata", "test", "page-000001.json")
    lake.write_bytes(url, orjson.dumps(sample_rows(BATCH_ROWS + 5)))
    batches = list(spec().read(lake, url))
    assert [b.num_rows for b in batches] == [BATCH_ROWS, 5]
    assert all(f.type == pa.string() for b in batches for f in b.schema)
    assert batches[1].column(":id").to_pylist()[-1] == f"row-{BATCH_ROWS + 4:05d}"


def test_observe_gives_the_newest_update_of_valid_rows() -> None:
    rows = sample_rows(5)
    rows[4]["count"] = "bad"  # the newest row is a reject: not observed
    valid, _ = transform(page(rows), spec(), run_id="r", source="s")
    assert spec().observe(valid) == {
        "socrata_updated_at": {datetime(2024, 3, 1, 12, 3, tzinfo=UTC)}
    }
    assert spec().observe(valid.slice(0, 0)) == {}


def test_rows_updated_at_comes_from_the_metadata() -> None:
    view = {**tabular_view(DATASET, COLUMNS, "Sample", 10), "rowsUpdatedAt": 1700000000}
    assert datasets.spec_from_view(view, portal="https://x").rows_updated_at == 1700000000
    assert spec().rows_updated_at is None
