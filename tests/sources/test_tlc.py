"""TLC source: parameters, download verification, the spec of each color (reader, transform
contract, rules) on small batches and on real files staged by the local engine."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from civiclake import tables
from civiclake.config import get_settings
from civiclake.errors import ParameterError, SourceError
from civiclake.lake import Lake
from civiclake.pipeline import RAW_RECORD, REJECT_REASON, RunContext, Staged, output_schema, split
from civiclake.pipeline.engines import get_stage
from civiclake.sources import tlc, tlc_fetch
from testsupport.files import FileServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tlc"
GREEN = DATA / "green_tripdata_2020-10.csv.gz"
YELLOW = DATA / "yellow_tripdata_2020-07_sample.csv"


def test_parse_months() -> None:
    assert [str(m) for m in tlc.parse_months("10", 2020)] == ["2020-10"]
    assert [m.month for m in tlc.parse_months("1-3, 10,2", 2021)] == [1, 2, 3, 10]
    for bad, message in [
        ("13", "2020-13 does not exist"),
        ("0", "2020-00 does not exist"),
        ("3-1", "goes backwards"),
        ("x", "'x' is not a month"),
    ]:
        with pytest.raises(ParameterError, match=message):
            tlc.parse_months(bad, 2020)
    with pytest.raises(ParameterError, match="unknown color 'purple'"):
        tlc.spec_for("purple")


def test_month_bounds() -> None:
    assert tlc.Month(2020, 12).stop == datetime(2021, 1, 1)
    assert tlc.Month(2020, 10).start == datetime(2020, 10, 1)


def test_source_urls() -> None:
    m = tlc.Month(2020, 10)
    assert tlc_fetch.source_url("https://h/releases/download/", "green", m) == (
        "https://h/releases/download/green/green_tripdata_2020-10.csv.gz"
    )
    assert (
        tlc_fetch.source_url(
            "https://x/trip-data/{color}_tripdata_{yyyy}-{mm}.parquet", "yellow", m
        )
        == "https://x/trip-data/yellow_tripdata_2020-10.parquet"
    )


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "mirror"
    (root / "green").mkdir(parents=True)
    shutil.copy(GREEN, root / "green" / GREEN.name)
    with FileServer(root) as server:
        yield server


def test_download_is_verified_and_atomic(mirror: FileServer, tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    m = tlc.Month(2020, 10)
    url = tlc_fetch.source_url(mirror.url, "green", m)
    target = tlc_fetch.raw_url_for(lake, "green", m, url)
    got = tlc_fetch.download(url, lake, target)
    assert got.bytes == GREEN.stat().st_size
    assert lake.read_bytes(target) == GREEN.read_bytes()

    mirror.truncate("/green/" + GREEN.name)
    lake.remove(target)
    with pytest.raises(SourceError, match="truncated gzip"):
        tlc_fetch.download(url, lake, target)
    assert not lake.exists(target)  # nothing half-written is visible

    mirror.fail_next("/green/" + GREEN.name, 503)
    with pytest.raises(tlc_fetch.TransientDownloadError, match="HTTP 503"):
        tlc_fetch.download(url, lake, target)
    with pytest.raises(SourceError, match=r"not found \(HTTP 404\)") as info:
        tlc_fetch.download(
            tlc_fetch.source_url(mirror.url, "green", tlc.Month(2020, 11)), lake, target
        )
    assert not isinstance(info.value, tlc_fetch.TransientDownloadError)


def expected_rules(
    frame: pd.DataFrame,
    pickup: str,
    dropoff: str,
    month: tlc.Month,
    passengers: str | None = "passenger_count",
) -> dict[str, int]:
    """The rules, computed independently with pandas, first broken rule wins."""
    pu = pd.to_datetime(frame[pickup])
    do = pd.to_datetime(frame[dropoff])
    outside = ~((pu >= month.start) & (pu < month.stop))
    backwards = (do < pu) & ~outside
    zero = (frame[passengers] == 0) & ~outside & ~backwards if passengers else outside & False
    return {
        tlc.RULE_PICKUP_OUTSIDE_MONTH: int(outside.sum()),
        tlc.RULE_DROPOFF_BEFORE_PICKUP: int(backwards.sum()),
        tlc.RULE_PASSENGER_COUNT_ZERO: int(zero.sum()),
    }


NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


@dataclass(frozen=True)
class StagedMonth:
    lake: Lake
    staged: Staged

    def valid(self) -> pa.Table:
        return pa.concat_tables(pq.read_table(self.lake.fs.open(u)) for u in self.staged.data_urls)

    def rejects(self) -> pa.Table:
        return pa.concat_tables(
            pq.read_table(self.lake.fs.open(u)) for u in self.staged.rejects_urls
        )


def _stage(source: Path, color: str, month: tlc.Month, **kwargs: Any) -> StagedMonth:
    """A raw file through the color's spec on the local engine: data files, nothing committed."""
    settings = get_settings()
    lake = settings.lake()
    spec = tlc.spec_for(color)
    catalog = tables.load_catalog(settings)
    table = tables.ensure_table_for(
        catalog, spec.table, tlc.table_schema(spec), month_of=spec.pickup
    )
    rejects = tables.ensure_table_for(catalog, spec.rejects_table, tlc.rejects_schema(spec))
    raw = tlc_fetch.stage_local_file(lake, str(source), color, month)
    ctx = tlc.context(spec, month, run_id="run-1", now=NOW)
    staged = get_stage()(spec, lake, [raw], ctx, table=table, rejects_table=rejects, **kwargs)
    return StagedMonth(lake, staged)


def _by_rule(staged: Staged) -> dict[str, int]:
    return {rule: staged.rejected_by_reason.get(rule, 0) for rule in tlc.RULES}


def test_green_month_types_and_rules() -> None:
    month = tlc.Month(2020, 10)
    result = _stage(GREEN, "green", month)
    staged = result.staged
    frame = pd.read_csv(GREEN, low_memory=False)
    assert staged.rows_read == len(frame) == 95_120
    assert (staged.rows_valid, staged.rows_rejected) == (94_852, 268)
    assert _by_rule(staged) == expected_rules(
        frame, "lpep_pickup_datetime", "lpep_dropoff_datetime", month
    )
    valid = result.valid()
    assert valid.num_rows == staged.rows_valid
    assert round(pc.sum(valid.column("total_amount")).as_py(), 2) == 2_192_954.40
    assert valid.column("lpep_pickup_datetime").type == pa.timestamp("us")
    assert valid.column("PULocationID").type == pa.int32()
    assert set(valid.column("load_run_id").to_pylist()) == {"run-1"}
    # NULL passenger counts stay NULL, never invented
    assert valid.column("passenger_count").null_count == int(frame["passenger_count"].isna().sum())
    assert valid.column("ehail_fee").null_count == valid.num_rows
    assert pc.min(valid.column("lpep_pickup_datetime")).as_py() >= month.start
    distance = frame.loc[frame["trip_distance"].astype(str).str.startswith("."), "trip_distance"]
    assert len(distance) == 0 or distance.iloc[0] < 1  # '.79' parsed as 0.79
    rejects = result.rejects()
    assert rejects.num_rows == staged.rows_rejected
    assert rejects.schema.names == tlc.rejects_schema(tlc.GREEN).names
    assert set(rejects.column("reject_reason").to_pylist()) <= set(tlc.RULES)
    assert set(rejects.column("source_month").to_pylist()) == {month.first_day}


def test_yellow_sample() -> None:
    month = tlc.Month(2020, 7)
    result = _stage(YELLOW, "yellow", month)
    frame = pd.read_csv(YELLOW)
    assert result.staged.rows_read == len(frame)
    assert _by_rule(result.staged) == expected_rules(
        frame, "tpep_pickup_datetime", "tpep_dropoff_datetime", month
    )
    assert result.valid().schema.field("congestion_surcharge").type == pa.float64()


def test_parquet_input_is_conformed(tmp_path: Path) -> None:
    frame = pd.read_csv(YELLOW)
    frame["passenger_count"] = frame["passenger_count"].astype("float64")  # as in TLC parquet
    for column in ("tpep_pickup_datetime", "tpep_dropoff_datetime"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
    frame["airport_fee"] = 0.0  # newer files carry extra columns
    source = tmp_path / "yellow_tripdata_2020-07.parquet"
    frame.to_parquet(source)
    lake = Lake((tmp_path / "lake").as_uri())
    raw = tlc_fetch.stage_local_file(lake, str(source), "yellow", tlc.Month(2020, 7))
    batches = list(tlc.YELLOW.read(lake, raw))
    assert sum(b.num_rows for b in batches) == len(frame)
    assert all(b.schema == tlc.YELLOW.arrow for b in batches)  # the declared types, exactly
    result = _stage(source, "yellow", tlc.Month(2020, 7))
    assert result.staged.rows_read == len(frame)
    assert result.valid().column("passenger_count").type == pa.int32()


def test_wrong_color_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a green trip file"):
        _stage(YELLOW, "green", tlc.Month(2020, 7))
    corrupt = tmp_path / "green_tripdata_2020-10.csv.gz"
    corrupt.write_bytes(GREEN.read_bytes()[:200_000])
    with pytest.raises(SourceError, match=r"cannot read \S*/green_tripdata_2020-10\.csv\.gz: "):
        _stage(corrupt, "green", tlc.Month(2020, 10))


# ---------------------------------------------------------------- the transform contract


def _batch(spec: tlc.TlcSpec, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows as the reader yields them: every declared column, declared types."""
    return pa.RecordBatch.from_pylist(
        [{name: row.get(name) for name in spec.names} for row in rows], schema=spec.arrow
    )


def _ctx(spec: tlc.TlcSpec, month: tlc.Month = tlc.Month(2020, 10)) -> RunContext:
    return tlc.context(spec, month, run_id="run-7", now=NOW)


def _green(pickup: str, dropoff: str, passengers: int | None = 1, **more: Any) -> dict[str, Any]:
    return {
        "VendorID": 2,
        "lpep_pickup_datetime": datetime.fromisoformat(pickup),
        "lpep_dropoff_datetime": datetime.fromisoformat(dropoff),
        "passenger_count": passengers,
        "total_amount": 12.5,
        **more,
    }


def test_transform_green_each_rule_first_rule_wins_raw_record_kept() -> None:
    spec = tlc.GREEN
    batch = _batch(
        spec,
        [
            _green("2020-10-01 00:00:00", "2020-10-01 00:10:00"),  # valid
            _green("2020-10-31 23:59:59", "2020-11-01 00:05:00", None),  # valid: NULL stays
            _green("2020-09-30 23:59:59", "2020-10-01 00:10:00"),  # outside (before)
            _green("2020-11-01 00:00:00", "2020-11-01 00:10:00"),  # outside (the stop)
            _green("2020-10-05 10:00:00", "2020-10-05 09:00:00"),  # backwards
            _green("2020-10-05 10:00:00", "2020-10-05 10:30:00", 0),  # zero passengers
            _green("2020-11-05 10:00:00", "2020-11-05 09:00:00", 0),  # all three: the first
            _green("2020-10-06 10:00:00", "2020-10-06 09:00:00", 0),  # two: the first of them
        ],
    )
    ctx = _ctx(spec)
    out = spec.transform(batch, ctx)
    assert out.schema == output_schema(spec)
    assert out.column(REJECT_REASON).to_pylist() == [
        None,
        None,
        tlc.RULE_PICKUP_OUTSIDE_MONTH,
        tlc.RULE_PICKUP_OUTSIDE_MONTH,
        tlc.RULE_DROPOFF_BEFORE_PICKUP,
        tlc.RULE_PASSENGER_COUNT_ZERO,
        tlc.RULE_PICKUP_OUTSIDE_MONTH,
        tlc.RULE_DROPOFF_BEFORE_PICKUP,
    ]
    assert set(out.column("load_run_id").to_pylist()) == {"run-7"}
    assert set(out.column("loaded_at").to_pylist()) == {NOW}
    raw = out.column(RAW_RECORD).to_pylist()
    assert raw[:2] == [None, None]  # nothing spent on valid rows
    kept = json.loads(raw[4])
    assert kept["lpep_pickup_datetime"] == "2020-10-05 10:00:00"
    assert (kept["VendorID"], kept["passenger_count"], kept["total_amount"]) == (2, 1, 12.5)

    rows, rejects = split(spec, out, ctx)
    assert rows.schema == tlc.table_schema(spec)
    assert rows.column("passenger_count").to_pylist() == [1, None]
    assert rejects.schema == tlc.rejects_schema(spec)
    assert rejects.num_rows == 6
    assert set(rejects.column("source_month").to_pylist()) == {date(2020, 10, 1)}
    assert rejects.column("lpep_dropoff_datetime")[2].as_py() == datetime(2020, 10, 5, 9)
    assert rejects.column("reject_reason").to_pylist() == out.column(REJECT_REASON).to_pylist()[2:]


def test_transform_yellow_and_fhv() -> None:
    yellow = _batch(
        tlc.YELLOW,
        [
            {
                "tpep_pickup_datetime": datetime(2020, 7, 1, 8),
                "tpep_dropoff_datetime": datetime(2020, 7, 1, 9),
                "passenger_count": 0,
            },
            {
                "tpep_pickup_datetime": datetime(2020, 7, 1, 8),
                "tpep_dropoff_datetime": None,  # unknown: not a broken rule
                "passenger_count": 2,
            },
        ],
    )
    out = tlc.YELLOW.transform(yellow, _ctx(tlc.YELLOW, tlc.Month(2020, 7)))
    assert out.column(REJECT_REASON).to_pylist() == [tlc.RULE_PASSENGER_COUNT_ZERO, None]
    fhv = _batch(
        tlc.FHV,
        [
            {"pickup_datetime": datetime(2020, 7, 3), "dropOff_datetime": datetime(2020, 7, 4)},
            {"pickup_datetime": None, "dropOff_datetime": datetime(2020, 7, 4)},  # no pickup
        ],
    )
    out = tlc.FHV.transform(fhv, _ctx(tlc.FHV, tlc.Month(2020, 7)))  # no passenger rule
    assert out.column(REJECT_REASON).to_pylist() == [None, tlc.RULE_PICKUP_OUTSIDE_MONTH]


def test_transform_is_pure_and_its_context_pickles() -> None:
    """The same batch and context give the same output, wherever it runs (a worker gets the
    context by value)."""
    spec = tlc.GREEN
    batch = _batch(spec, [_green("2020-10-05 10:00:00", "2020-10-05 09:00:00")])
    ctx = _ctx(spec)
    again = pickle.loads(pickle.dumps(ctx))
    assert spec.transform(batch, ctx).equals(
        pickle.loads(pickle.dumps(spec)).transform(batch, again)
    )


def test_the_sink_gets_every_valid_row_before_it_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)
    seen: list[pa.Table] = []
    result = _stage(GREEN, "green", tlc.Month(2020, 10), sink=seen.append)
    assert len(seen) >= 4 and all(t.num_rows for t in seen)
    streamed = pa.concat_tables(seen)
    assert streamed.schema == tlc.table_schema(tlc.GREEN)
    assert streamed.num_rows == result.staged.rows_valid
    assert pc.sum(streamed.column("total_amount")).equals(
        pc.sum(result.valid().column("total_amount"))
    )


@pytest.mark.parametrize("error", [RuntimeError("COPY failed"), OSError("connection reset")])
def test_a_failing_sink_stops_the_stage(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)
    calls: list[int] = []

    def sink(table: pa.Table) -> None:
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise error

    with pytest.raises(type(error)) as caught:  # the sink's own error, not a SourceError
        _stage(GREEN, "green", tlc.Month(2020, 10), sink=sink)
    assert caught.value is error and len(calls) == 2


def test_a_truncated_file_fails_after_streaming_some_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corruption found late in the file: the sink has had batches, the error still ends the
    stage. (Arrow reads ahead: the damage must lie well past the first batches.)"""
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)
    text = gzip.decompress(GREEN.read_bytes())
    big = tmp_path / "green_tripdata_2020-10.csv.gz"
    big.write_bytes(gzip.compress(text + text.split(b"\n", 1)[1] * 5)[:-100_000])
    calls: list[int] = []
    with pytest.raises(SourceError, match=r"cannot read \S*/green_tripdata_2020-10\.csv\.gz: "):
        _stage(big, "green", tlc.Month(2020, 10), sink=lambda t: calls.append(1))
    assert calls  # some batches reached the sink before the damage


def test_a_local_file_never_overwrites_the_cached_download(tmp_path: Path) -> None:
    """--from-file and a download of the same month keep separate raw copies: the download
    task's one-day cache must keep pointing at what was downloaded."""
    lake = Lake((tmp_path / "lake").as_uri())
    month = tlc.Month(2020, 10)
    downloaded = tlc_fetch.raw_url_for(lake, "green", month, f"https://mirror/green/{GREEN.name}")
    lake.write_bytes(downloaded, b"the downloaded bytes")
    staged = tlc_fetch.stage_local_file(lake, str(GREEN), "green", month)
    assert staged != downloaded
    assert lake.read_bytes(downloaded) == b"the downloaded bytes"
    assert lake.read_bytes(staged) == GREEN.read_bytes()
