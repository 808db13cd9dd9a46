"""The raw zone's one DuckDB JSON reader (``sources._json``) as both sources call it: B&T's
exports (an array or one record a line, detected) and Socrata's API pages, on a local lake and
streamed from every object store; a file DuckDB cannot read is one error naming the file, also
when the fault is found while streaming, past what DuckDB samples when it binds."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from civiclake.config import get_settings
from civiclake.errors import SourceError
from civiclake.lake import Lake
from civiclake.sources import bnt, socrata_dataset as datasets
from civiclake.sources.socrata import BodyError
from civiclake.sources.socrata_transform import BATCH_ROWS
from civiclake.testing.socrata import tabular_view
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows
from testsupport.objectstores import ObjectStore, use_env

RECORD = {
    "plaza_id": "21",
    "date": "2024-03-01T00:00:00.000",
    "hour": "5",
    "direction": "I",
    "vehicles_e_zpass": "2673",
    "vehicles_cash": "567",  # the old name of vehicles_vtoll
}
# well past the records DuckDB samples while binding: a fault there is found while streaming
MANY = 3 * bnt.JSON_BATCH_ROWS // 2


def socrata_spec() -> datasets.DatasetSpec:
    view = tabular_view(DATASET, COLUMNS, "Sample", 10)
    return datasets.spec_from_view(view, portal="https://data.example.org")


def read_table(batches: list[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(batches)


def ndjson(count: int) -> bytes:
    return b"\n".join(orjson.dumps({**RECORD, "hour": str(i % 24)}) for i in range(count))


def test_a_bnt_export_as_an_array_or_one_record_a_line_reads_the_same() -> None:
    lake = get_settings().lake()
    as_array = lake.join("raw", "files", "export.json")
    as_lines = lake.join("raw", "files", "export.ndjson")
    lake.write_bytes(as_array, json.dumps([RECORD, {**RECORD, "hour": "6"}]).encode())
    lake.write_bytes(as_lines, ndjson(2))
    hours = {as_array: ["5", "6"], as_lines: ["0", "1"]}
    for url in (as_array, as_lines):
        batches = list(bnt.BntSpec().read(lake, url))
        # only the fields the file has (no all-NULL vehicles_vtoll), every one a string
        assert {tuple(b.schema.names) for b in batches} == {(*bnt.FIELDS[:5], "vehicles_cash")}
        assert all(f.type == pa.string() for b in batches for f in b.schema)
        table = read_table(batches)
        assert table.column("vehicles_cash").to_pylist() == ["567", "567"]
        assert sorted(table.column("hour").to_pylist()) == hours[url]


def test_a_long_bnt_export_streams_in_batches() -> None:
    lake = get_settings().lake()
    url = lake.join("raw", "files", "export.ndjson")
    lake.write_bytes(url, ndjson(MANY))
    batches = list(bnt.BntSpec().read(lake, url))
    assert max(b.num_rows for b in batches) <= bnt.JSON_BATCH_ROWS
    assert sum(b.num_rows for b in batches) == MANY
    assert read_table(batches).column("hour").to_pylist()[-1] == str((MANY - 1) % 24)


def test_a_bnt_export_broken_past_the_sample_names_the_file() -> None:
    lake = get_settings().lake()
    url = lake.join("raw", "files", "export.ndjson")
    lake.write_bytes(url, ndjson(MANY) + b'\n{"plaza_id": "21", "date"')
    message = rf"^{re.escape(url)}: not readable JSON: Invalid Input Error: Malformed JSON"
    with pytest.raises(SourceError, match=message):
        list(bnt.BntSpec().read(lake, url))


def test_a_socrata_page_cut_off_names_the_page() -> None:
    lake = get_settings().lake()
    url = lake.join("raw", "socrata", DATASET, "page-000001.json")
    body = orjson.dumps(sample_rows(BATCH_ROWS + 5))
    lake.write_bytes(url, body[: len(body) - 100])
    message = rf"^{re.escape(url)}: not a complete JSON array of rows \(\w+\)$"
    with pytest.raises(BodyError, match=message):
        list(socrata_spec().read(lake, url))


def _store_lake(store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lake:
    """A fresh prefix of the store whose files are never read whole (``read_bytes``): the
    reader must stream them."""
    use_env(monkeypatch, tmp_path, store.env)
    lake = Lake(store.lake_url(f"json-{uuid.uuid4().hex[:8]}"))

    def whole(url: str) -> bytes:
        raise AssertionError(f"{url} read whole into memory")

    monkeypatch.setattr(lake, "read_bytes", whole)
    return lake


@pytest.mark.slow
def test_pages_and_exports_stream_from_every_object_store(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lake = _store_lake(store, monkeypatch, tmp_path)
    page = lake.join("raw", "socrata", DATASET, "run=r1", "page-000001.json")
    lake.write_bytes(page, orjson.dumps(sample_rows(BATCH_ROWS + 5)))
    batches = list(socrata_spec().read(lake, page))
    assert [b.num_rows for b in batches] == [BATCH_ROWS, 5]
    # (no hive partitioning: the folder run=r1 is not a column)
    assert batches[0].schema.names == [c.field for c in socrata_spec().columns]
    assert batches[1].column(":id").to_pylist()[-1] == f"row-{BATCH_ROWS + 4:05d}"

    export = lake.join("raw", "files", "run=r1", "export.ndjson")
    lake.write_bytes(export, ndjson(3))
    table = read_table(list(bnt.BntSpec().read(lake, export)))
    assert table.column("hour").to_pylist() == ["0", "1", "2"]

    cut = lake.join("raw", "socrata", DATASET, "run=r1", "page-000002.json")
    lake.write_bytes(cut, orjson.dumps(sample_rows(3))[:-40])
    with pytest.raises(BodyError, match=rf"^{re.escape(cut)}: not a complete JSON array"):
        list(socrata_spec().read(lake, cut))
