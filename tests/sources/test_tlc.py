"""TLC source: parameters, download verification, typed conversion and rules on real files."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from civiclake.errors import ParameterError, SourceError
from civiclake.lake import Lake
from civiclake.sources import tlc
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
    assert tlc.source_url("https://h/releases/download/", "green", m) == (
        "https://h/releases/download/green/green_tripdata_2020-10.csv.gz"
    )
    assert (
        tlc.source_url("https://x/trip-data/{color}_tripdata_{yyyy}-{mm}.parquet", "yellow", m)
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
    url = tlc.source_url(mirror.url, "green", m)
    target = tlc.raw_url_for(lake, "green", m, url)
    got = tlc.download(url, lake, target)
    assert got.bytes == GREEN.stat().st_size
    assert lake.read_bytes(target) == GREEN.read_bytes()

    mirror.truncate("/green/" + GREEN.name)
    lake.remove(target)
    with pytest.raises(SourceError, match="truncated gzip"):
        tlc.download(url, lake, target)
    assert not lake.exists(target)  # nothing half-written is visible

    mirror.fail_next("/green/" + GREEN.name, 503)
    with pytest.raises(tlc.TransientDownloadError, match="HTTP 503"):
        tlc.download(url, lake, target)
    with pytest.raises(SourceError, match=r"not found \(HTTP 404\)") as info:
        tlc.download(tlc.source_url(mirror.url, "green", tlc.Month(2020, 11)), lake, target)
    assert not isinstance(info.value, tlc.TransientDownloadError)


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


def _convert(tmp_path: Path, source: Path, color: str, month: tlc.Month) -> tlc.Conversion:
    lake = Lake((tmp_path / "lake").as_uri())
    raw = tlc.stage_local_file(lake, str(source), color, month)
    return tlc.convert(lake, raw, tlc.spec_for(color), month, run_id="run-1")


def test_green_month_types_and_rules(tmp_path: Path) -> None:
    month = tlc.Month(2020, 10)
    result = _convert(tmp_path, GREEN, "green", month)
    frame = pd.read_csv(GREEN, low_memory=False)
    assert result.rows_read == len(frame) == 95_120
    assert result.rows_read == result.rows_valid + result.rows_rejected
    assert result.rejected_by_rule == expected_rules(
        frame, "lpep_pickup_datetime", "lpep_dropoff_datetime", month
    )
    valid = pq.read_table(result.valid_url.removeprefix("file://"))
    assert valid.schema == tlc.table_schema(tlc.GREEN)
    assert valid.num_rows == result.rows_valid
    # NULL passenger counts stay NULL, never invented
    assert valid.column("passenger_count").null_count == int(frame["passenger_count"].isna().sum())
    assert valid.column("ehail_fee").null_count == valid.num_rows
    assert pa.compute.min(valid.column("lpep_pickup_datetime")).as_py() >= month.start
    distance = frame.loc[frame["trip_distance"].astype(str).str.startswith("."), "trip_distance"]
    assert len(distance) == 0 or distance.iloc[0] < 1  # '.79' parsed as 0.79
    rejects = pq.read_table(result.rejects_url.removeprefix("file://"))
    assert rejects.num_rows == result.rows_rejected
    assert set(rejects.column("reject_reason").to_pylist()) <= set(tlc.RULES)
    assert set(rejects.column("source_month").to_pylist()) == {month.first_day}


def test_yellow_sample(tmp_path: Path) -> None:
    month = tlc.Month(2020, 7)
    result = _convert(tmp_path, YELLOW, "yellow", month)
    frame = pd.read_csv(YELLOW)
    assert result.rows_read == len(frame)
    assert result.rejected_by_rule == expected_rules(
        frame, "tpep_pickup_datetime", "tpep_dropoff_datetime", month
    )
    valid = pq.read_table(result.valid_url.removeprefix("file://"))
    assert valid.schema.field("congestion_surcharge").type == pa.float64()


def test_parquet_input_is_conformed(tmp_path: Path) -> None:
    frame = pd.read_csv(YELLOW)
    frame["passenger_count"] = frame["passenger_count"].astype("float64")  # as in TLC parquet
    for column in ("tpep_pickup_datetime", "tpep_dropoff_datetime"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[ns]")
    frame["airport_fee"] = 0.0  # newer files carry extra columns
    source = tmp_path / "yellow_tripdata_2020-07.parquet"
    frame.to_parquet(source)
    result = _convert(tmp_path, source, "yellow", tlc.Month(2020, 7))
    assert result.rows_read == len(frame)
    valid = pq.read_table(result.valid_url.removeprefix("file://"))
    assert valid.schema == tlc.table_schema(tlc.YELLOW)


def test_wrong_color_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a green trip file"):
        _convert(tmp_path, YELLOW, "green", tlc.Month(2020, 7))
    corrupt = tmp_path / "green_tripdata_2020-10.csv.gz"
    corrupt.write_bytes(GREEN.read_bytes()[:200_000])
    with pytest.raises(SourceError, match="green 2020-10: cannot read"):
        _convert(tmp_path, corrupt, "green", tlc.Month(2020, 10))


def test_the_sink_gets_every_valid_row_before_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)
    lake = Lake((tmp_path / "lake").as_uri())
    month = tlc.Month(2020, 10)
    raw = tlc.stage_local_file(lake, str(GREEN), "green", month)
    valid_url, _ = tlc.stage_urls(lake, tlc.GREEN, month)
    seen: list[pa.Table] = []

    def sink(table: pa.Table) -> None:
        assert not lake.exists(valid_url)  # streamed while converting: no file yet
        seen.append(table)

    result = tlc.convert(lake, raw, tlc.GREEN, month, run_id="run-1", sink=sink)

    assert len(seen) >= 4 and all(t.num_rows for t in seen)
    streamed = pa.concat_tables(seen)
    assert streamed.schema == tlc.table_schema(tlc.GREEN)
    assert streamed.num_rows == result.rows_valid
    assert streamed.equals(pq.read_table(valid_url.removeprefix("file://")))


@pytest.mark.parametrize("error", [RuntimeError("COPY failed"), OSError("connection reset")])
def test_a_failing_sink_stops_the_conversion_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)
    lake = Lake((tmp_path / "lake").as_uri())
    month = tlc.Month(2020, 10)
    raw = tlc.stage_local_file(lake, str(GREEN), "green", month)
    calls: list[int] = []

    def sink(table: pa.Table) -> None:
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise error

    with pytest.raises(type(error)) as caught:  # the sink's own error, not a SourceError
        tlc.convert(lake, raw, tlc.GREEN, month, run_id="run-1", sink=sink)

    assert caught.value is error and len(calls) == 2
    assert not any(lake.exists(url) for url in tlc.stage_urls(lake, tlc.GREEN, month))


def test_a_truncated_file_fails_after_streaming_some_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corruption found late in the file: the sink has had batches, the error still ends the
    convert. (Arrow reads ahead: the damage must lie well past the first batches.)"""
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)
    text = gzip.decompress(GREEN.read_bytes())
    big = tmp_path / "green_tripdata_2020-10.csv.gz"
    big.write_bytes(gzip.compress(text + text.split(b"\n", 1)[1] * 5)[:-100_000])
    lake = Lake((tmp_path / "lake").as_uri())
    month = tlc.Month(2020, 10)
    raw = tlc.stage_local_file(lake, str(big), "green", month)
    calls: list[int] = []

    with pytest.raises(SourceError, match="green 2020-10: cannot read"):
        tlc.convert(lake, raw, tlc.GREEN, month, run_id="run-1", sink=lambda t: calls.append(1))

    assert calls  # some batches reached the sink before the damage
    assert not any(lake.exists(url) for url in tlc.stage_urls(lake, tlc.GREEN, month))


def test_a_local_file_never_overwrites_the_cached_download(tmp_path: Path) -> None:
    """--from-file and a download of the same month keep separate raw copies: the download
    task's one-day cache must keep pointing at what was downloaded."""
    lake = Lake((tmp_path / "lake").as_uri())
    month = tlc.Month(2020, 10)
    downloaded = tlc.raw_url_for(lake, "green", month, f"https://mirror/green/{GREEN.name}")
    lake.write_bytes(downloaded, b"the downloaded bytes")
    staged = tlc.stage_local_file(lake, str(GREEN), "green", month)
    assert staged != downloaded
    assert lake.read_bytes(downloaded) == b"the downloaded bytes"
    assert lake.read_bytes(staged) == GREEN.read_bytes()
