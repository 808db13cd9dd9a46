"""MTA Bridges & Tunnels hourly traffic (data.ny.gov ``qzve-kjga``): one configuration of Socrata.

The shape every source follows:

* ``fetch_range`` (API -> raw zone) or ``stage_file`` (bulk export -> raw zone) land raw data in
  the lake, as received, and return lake URLs;
* ``stage`` streams raw files through ``normalize`` (declared types, rules, rejects) into staged
  Parquet in the lake, with bounded memory;
* the Iceberg schema, partitioning and table names below say where it goes.

Partitioning is ``month(date)``: the dataset has about 480 rows a day (10 plazas x 2 directions x
24 hours), ~15k a month, ~2.5M since 2010. Day partitions (the tutorial's ``identity(date)``)
would make ~5,500 files of a few KB; years would make every incremental run rewrite a 175k-row
file. Month keeps ~170 files of healthy size, and a few-day incremental replace rewrites at most
two of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import MonthTransform
from pyiceberg.types import (
    DateType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from civiclake._private.progress import Progress
from civiclake.errors import SourceError
from civiclake.lake import RAW_ZONE, STAGE_ZONE, Lake

# the fetch side lives in bnt_fetch (light imports for a fast first request); re-exported
from civiclake.sources.bnt_fetch import (
    DATASET_ID as DATASET_ID,
    DATE_FIELD as DATE_FIELD,
    GC_EVERY_PAGES as GC_EVERY_PAGES,
    PAGE_ORDER as PAGE_ORDER,
    REJECTS_TABLE as REJECTS_TABLE,
    TABLE as TABLE,
    FetchResult as FetchResult,
    LoadContext as LoadContext,
    LoadRange as LoadRange,
    fetch_range as fetch_range,
    raw_dir as raw_dir,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from civiclake.slices import Slice
    from civiclake.tables import CommitResult

logger = logging.getLogger(__name__)

NAME = "bnt"
# The typed intermediate between raw pages, Iceberg and the warehouses is Parquet (what every
# warehouse loads) with Snappy: measured on 1M B&T rows, 0.25 s to write and 0.15 s to read,
# against 0.86 s to write Arrow IPC + LZ4 (the earlier stage format) and 0.56 s for zstd.
STAGE_COMPRESSION = "snappy"

FIELDS = ("plaza_id", "date", "hour", "direction", "vehicles_e_zpass", "vehicles_vtoll")
FIELD_ALIASES = {"vehicles_cash": "vehicles_vtoll"}  # the older name of the same count
KEY_FIELDS = ("plaza_id", "date", "hour", "direction")
COUNT_FIELDS = ("vehicles_e_zpass", "vehicles_vtoll")
DIRECTIONS = ("I", "O")

_FACILITIES = {
    1: "RFK Bridge Bronx Plaza",
    2: "RFK Bridge Manhattan Plaza",
    3: "Bronx-Whitestone Bridge",
    4: "Henry Hudson Bridge",
    5: "Marine Parkway-Gil Hodges Memorial Bridge",
    6: "Cross Bay Veterans Memorial Bridge",
    7: "Queens Midtown Tunnel",
    8: "Hugh L. Carey Tunnel",
    9: "Throgs Neck Bridge",
    11: "Verrazano-Narrows Bridge",
}
# Older rows use plaza ids 1-11, newer ones 21-30 for the same plazas.
_NEW_IDS = {1: 21, 2: 22, 3: 23, 4: 24, 5: 25, 6: 26, 7: 27, 8: 28, 9: 29, 11: 30}
PLAZA_FACILITIES: dict[int, str] = {
    **_FACILITIES,
    **{_NEW_IDS[old]: name for old, name in _FACILITIES.items()},
}

SCHEMA = Schema(
    NestedField(1, "plaza_id", IntegerType(), required=False),
    NestedField(2, "facility", StringType(), required=False),
    NestedField(3, "date", DateType(), required=False),
    NestedField(4, "hour", IntegerType(), required=False),
    NestedField(5, "direction", StringType(), required=False),
    NestedField(6, "vehicles_e_zpass", LongType(), required=False),
    NestedField(7, "vehicles_vtoll", LongType(), required=False),
    NestedField(8, "load_run_id", StringType(), required=False),
    NestedField(9, "load_source", StringType(), required=False),
    NestedField(10, "loaded_at", TimestamptzType(), required=False),
)
PARTITION_SPEC = PartitionSpec(
    PartitionField(source_id=3, field_id=1000, transform=MonthTransform(), name="date_month")
)
REJECTS_SCHEMA = Schema(
    NestedField(1, "date", DateType(), required=False, doc="record date if inside the load range"),
    NestedField(2, "reason", StringType(), required=False),
    NestedField(3, "raw_record", StringType(), required=False),
    NestedField(4, "load_range", StringType(), required=False),
    NestedField(5, "load_run_id", StringType(), required=False),
    NestedField(6, "load_source", StringType(), required=False),
    NestedField(7, "rejected_at", TimestamptzType(), required=False),
)

TIMESTAMP_UTC = pa.timestamp("us", tz="UTC")
ARROW_SCHEMA = pa.schema(
    [
        ("plaza_id", pa.int32()),
        ("facility", pa.string()),
        ("date", pa.date32()),
        ("hour", pa.int32()),
        ("direction", pa.string()),
        ("vehicles_e_zpass", pa.int64()),
        ("vehicles_vtoll", pa.int64()),
        ("load_run_id", pa.string()),
        ("load_source", pa.string()),
        ("loaded_at", TIMESTAMP_UTC),
    ]
)
REJECTS_ARROW_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("reason", pa.string()),
        ("raw_record", pa.string()),
        ("load_range", pa.string()),
        ("load_run_id", pa.string()),
        ("load_source", pa.string()),
        ("rejected_at", TIMESTAMP_UTC),
    ]
)

_INT_PATTERN = r"^[+-]?[0-9]{1,18}$"
_ISO_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?$"
_US_DATE_PATTERN = r"^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$"
_FACILITY_LOOKUP = pa.array(
    [PLAZA_FACILITIES.get(i) for i in range(max(PLAZA_FACILITIES) + 1)], pa.string()
)


def stage_file(lake: Lake, path: str, *, run_id: str) -> list[str]:
    """Copy a bulk export (CSV or the API's JSON) into the raw zone, atomically."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not _file_format(name):
        raise SourceError(f"{path}: unsupported file type (expected .csv, .json, .csv.gz)")
    url = lake.join(RAW_ZONE, "files", DATASET_ID, f"run={run_id}", name)
    try:
        lake.copy_from(path, url)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    if _file_format(name) == "csv":
        _refuse_truncated(lake, url, path)
    return [url]


def _refuse_truncated(lake: Lake, url: str, path: str) -> None:
    """A cut-off file would replace its last day with part of it: refused, copy removed."""
    from civiclake.sources.csv_check import TruncatedFile, check_complete

    try:
        check_complete(lake, url, path)
    except TruncatedFile:
        lake.remove(url)
        raise


def _file_format(name: str) -> str | None:
    lowered = name.lower()
    for suffix, kind in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".json", "json"),
        (".json.gz", "json"),
        (".ndjson", "json"),
    ):
        if lowered.endswith(suffix):
            return kind
    return None


# ---------------------------------------------------------------- read raw -> string batches


@dataclass
class RawBatch:
    """Rows of a raw file as strings under canonical field names, plus their raw form."""

    strings: pa.Table
    raw_records: Callable[[list[int]], list[str]]
    fields_seen: set[str] = field(default_factory=set)


def canonical_field(name: str) -> str:
    """Header to field name: ``'# Vehicles - E-ZPass'`` -> ``vehicles_e_zpass``."""
    name = re.sub(r"\(.*?\)", "", name)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
    return FIELD_ALIASES.get(name, name)


def _string_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array(
            [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
            pa.string(),
        )


def batch_from_records(rows: list[dict[str, Any]]) -> RawBatch:
    """API rows (dicts of strings) -> a string batch. Older field names are mapped."""
    seen: set[str] = set()
    for row in rows[:: max(1, len(rows) // 200)] + rows[-1:]:  # a sample is enough to spot names
        seen.update(row)
    columns: dict[str, list[Any]] = {}
    for name in FIELDS:
        aliases = [a for a, target in FIELD_ALIASES.items() if target == name and a in seen]
        if aliases and name not in seen:
            columns[name] = [r.get(aliases[0]) for r in rows]
        elif aliases:
            alias = aliases[0]
            columns[name] = [r.get(name, r.get(alias)) for r in rows]
        else:
            columns[name] = [r.get(name) for r in rows]
    table = pa.table({name: _string_column(values) for name, values in columns.items()})

    def raw(indices: list[int]) -> list[str]:
        return [orjson.dumps(rows[i]).decode() for i in indices]

    return RawBatch(table, raw, seen)


def _csv_header(lake: Lake, url: str) -> list[str]:
    import contextlib
    import csv
    import gzip
    import io

    with (
        lake.open(url) as handle,
        (
            gzip.open(handle) if url.lower().endswith(".gz") else contextlib.nullcontext(handle)
        ) as stream,
    ):
        first = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="").readline()
    return next(csv.reader([first]), [])


def _csv_batches(lake: Lake, url: str, block_bytes: int) -> Iterator[RawBatch]:
    """A CSV export, streamed block by block; every column read as a string (types are ours)."""
    import pyarrow.csv as pacsv

    originals = _csv_header(lake, url)
    names = [canonical_field(n) for n in originals]
    if not set(KEY_FIELDS) & set(names):
        raise SourceError(f"{url}: header {originals} has none of the B&T columns")
    with lake.open(url) as handle:
        stream: Any = handle
        if url.lower().endswith(".gz"):
            stream = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "gzip")
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=block_bytes),
            convert_options=pacsv.ConvertOptions(
                strings_can_be_null=False,
                column_types=dict.fromkeys(originals, pa.string()),
            ),
        )
        for batch in reader:
            table = pa.Table.from_batches([batch]).rename_columns(names)
            strings = pa.table(
                {
                    name: (
                        table.column(name).combine_chunks()
                        if name in names
                        else pa.nulls(table.num_rows, pa.string())
                    )
                    for name in FIELDS
                }
            )

            def raw(indices: list[int], _b: pa.RecordBatch = batch) -> list[str]:
                picked = _b.take(pa.array(indices, pa.int64())).to_pylist()
                return [
                    orjson.dumps(dict(zip(originals, r.values(), strict=True))).decode()
                    for r in picked
                ]

            yield RawBatch(strings, raw, set(names))


JSON_KEY_SAMPLE_ROWS = 20_000


def _json_batches(lake: Lake, urls: list[str], batch_rows: int) -> Iterator[RawBatch]:
    """JSON files (API pages, or an export as an array or newline-delimited), read by DuckDB.

    DuckDB parses in C++ straight to Arrow, several times faster than building Python dicts,
    and streams, so memory stays bounded whatever the number of files.
    """
    import duckdb

    con = duckdb.connect()
    try:
        paths: list[str] = []
        for url in urls:
            local = lake.local_path(url)
            paths.append(local if local else url)
        if not lake.local_path(urls[0]):
            con.register_filesystem(lake.fs)
        options = "format='auto', hive_partitioning=false, maximum_object_size=16777216"
        try:
            # the field names: a sample is enough (a whole scan would double the cost)
            keys = con.sql(
                f"SELECT DISTINCT unnest(json_keys(j::JSON)) FROM (SELECT j FROM read_json("
                f"$paths, {options}, records=false) t(j) LIMIT {JSON_KEY_SAMPLE_ROWS})",
                params={"paths": paths[:1] + paths[-1:]},
            ).fetchall()
        except duckdb.Error as exc:
            raise SourceError(
                f"{urls[0]}: not readable JSON: {str(exc).strip().splitlines()[0]}"
            ) from None
        seen = {k for (k,) in keys}
        originals = [n for n in (*FIELDS, *FIELD_ALIASES) if n in seen]
        if not set(originals) & set(KEY_FIELDS):
            raise SourceError(f"{urls[0]}: none of the B&T fields {', '.join(FIELDS)}")
        columns = "{" + ", ".join(f"'{n}': 'VARCHAR'" for n in originals) + "}"
        query = f"SELECT * FROM read_json($paths, {options}, columns={columns})"
        try:
            reader = con.sql(query, params={"paths": paths}).to_arrow_reader(batch_rows)
            for batch in reader:
                yield _raw_batch_from_arrow(pa.Table.from_batches([batch]), originals, seen)
        except duckdb.Error as exc:
            raise SourceError(f"not readable JSON: {str(exc).strip().splitlines()[0]}") from None
    finally:
        con.close()


def _raw_batch_from_arrow(table: pa.Table, originals: list[str], seen: set[str]) -> RawBatch:
    """String columns under their source names -> canonical fields (old names folded in)."""
    strings: dict[str, pa.Array] = {}
    for name in FIELDS:
        candidates = [
            table.column(n).combine_chunks()
            for n in (name, *(a for a, t in FIELD_ALIASES.items() if t == name))
            if n in originals
        ]
        if not candidates:
            strings[name] = pa.nulls(table.num_rows, pa.string())
        elif len(candidates) == 1:
            strings[name] = candidates[0]
        else:
            strings[name] = pc.coalesce(*candidates)

    def raw(indices: list[int]) -> list[str]:
        picked = table.take(pa.array(indices, pa.int64())).to_pylist()
        return [
            orjson.dumps({k: v for k, v in r.items() if v is not None}).decode() for r in picked
        ]

    return RawBatch(pa.table(strings), raw, seen)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_struct(columns: dict[str, str]) -> str:
    inner = ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items())
    return "{" + inner + "}"


def iter_raw_batches(
    lake: Lake, raw_urls: list[str], *, batch_rows: int = 100_000
) -> Iterator[RawBatch]:
    """Every raw file of a load as string batches, one bounded batch at a time."""
    json_urls = [u for u in raw_urls if _file_format(u.rsplit("/", 1)[-1]) == "json"]
    for url in raw_urls:
        if _file_format(url.rsplit("/", 1)[-1]) not in ("csv", "json"):
            raise SourceError(f"{url}: unsupported raw file")
    for url in raw_urls:
        if _file_format(url.rsplit("/", 1)[-1]) == "csv":
            yield from _csv_batches(lake, url, block_bytes=16 * 1024 * 1024)
    if json_urls:
        yield from _json_batches(lake, json_urls, batch_rows)


# ---------------------------------------------------------------- normalize: rules and rejects


@dataclass
class Normalized:
    valid: pa.Table
    rejects: pa.Table
    unknown_plaza_ids: set[int]


def _blank_to_null(arr: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _parse_int(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Integers and where they were valid. Clean data takes one vectorized cast; only a batch
    with a bad value pays for trimming and the regular expression."""
    try:
        values = pc.cast(raw, pa.int64())
        return values, pc.is_valid(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        arr = _blank_to_null(raw)
    ok = pc.fill_null(pc.match_substring_regex(arr, _INT_PATTERN), False)
    values = pc.cast(pc.if_else(ok, arr, pa.scalar(None, pa.string())), pa.int64())
    return values, ok


_FAST_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S.000", "%m/%d/%Y")  # the API's, the CSV export's


def _parse_date(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Dates from the API's floating timestamps or the export's MM/DD/YYYY."""
    for fmt in _FAST_DATE_FORMATS:
        parsed = pc.strptime(raw, format=fmt, unit="s", error_is_null=True)
        if parsed.null_count == raw.null_count:
            values = pc.cast(parsed, pa.date32(), safe=False)
            return values, pc.is_valid(values)
    arr = _blank_to_null(raw)
    iso_ok = pc.fill_null(pc.match_substring_regex(arr, _ISO_DATE_PATTERN), False)
    us_ok = pc.fill_null(pc.match_substring_regex(arr, _US_DATE_PATTERN), False)
    iso = pc.strptime(
        pc.utf8_slice_codeunits(arr, 0, 10), format="%Y-%m-%d", unit="s", error_is_null=True
    )
    us = pc.strptime(arr, format="%m/%d/%Y", unit="s", error_is_null=True)
    parsed = pc.coalesce(pc.if_else(iso_ok, iso, None), pc.if_else(us_ok, us, None))
    values = pc.cast(parsed, pa.date32())
    return values, pc.is_valid(values)


def normalize(batch: RawBatch, ctx: LoadContext) -> Normalized:
    """Typed rows that pass every rule, and rejects that carry the reason and the raw record."""
    s = {name: batch.strings.column(name).combine_chunks() for name in FIELDS}
    n = batch.strings.num_rows
    plaza, plaza_ok = _parse_int(s["plaza_id"])
    day, day_ok = _parse_date(s["date"])
    hour, hour_ok = _parse_int(s["hour"])
    hour_ok = pc.and_(
        hour_ok, pc.fill_null(pc.and_(pc.greater_equal(hour, 0), pc.less_equal(hour, 23)), False)
    )
    direction = pc.utf8_upper(pc.utf8_trim_whitespace(s["direction"]))
    direction_ok = pc.fill_null(pc.is_in(direction, pa.array(DIRECTIONS)), False)
    counts = {}
    counts_ok = {}
    for name in COUNT_FIELDS:
        values, ok = _parse_int(s[name])
        counts[name] = values
        counts_ok[name] = pc.and_(ok, pc.fill_null(pc.greater_equal(values, 0), False))
    plaza_ok = pc.and_(
        plaza_ok, pc.fill_null(pc.and_(pc.greater(plaza, 0), pc.less(plaza, 2**31)), False)
    )
    in_range = (
        pa.repeat(pa.scalar(True), n)
        if ctx.range is None
        else pc.fill_null(
            pc.and_(
                pc.greater_equal(day, pa.scalar(ctx.range.start, pa.date32())),
                pc.less(day, pa.scalar(ctx.range.stop, pa.date32())),
            ),
            False,
        )
    )
    # a date past tomorrow (any time zone's today) is a typo or a test row: a reject with its
    # reason, never the end of the range a file load replaces
    today = max(ctx.loaded_at.date(), date.today())  # (a context may carry an older time)
    latest = today + timedelta(days=FUTURE_DAYS)
    not_future = pc.fill_null(pc.less_equal(day, pa.scalar(latest, pa.date32())), True)
    checks: list[tuple[str, pa.Array]] = [
        ("plaza_id", plaza_ok),
        ("date", day_ok),
        ("hour", hour_ok),
        ("direction", direction_ok),
        *counts_ok.items(),
    ]
    ok = pc.and_(in_range, not_future)
    for _, check in checks:
        ok = pc.and_(ok, check)

    plaza32 = pc.cast(pc.if_else(plaza_ok, plaza, None), pa.int32())
    lookup_index = pc.if_else(pc.less(plaza32, len(_FACILITY_LOOKUP)), plaza32, None)
    facility = pc.take(_FACILITY_LOOKUP, lookup_index)
    valid_mask = ok
    valid = pa.table(
        {
            "plaza_id": plaza32,
            "facility": facility,
            "date": day,
            "hour": pc.cast(pc.if_else(hour_ok, hour, None), pa.int32()),
            "direction": direction,
            "vehicles_e_zpass": counts["vehicles_e_zpass"],
            "vehicles_vtoll": counts["vehicles_vtoll"],
        }
    ).filter(valid_mask)
    m = valid.num_rows
    valid = valid.append_column("load_run_id", pa.repeat(pa.scalar(ctx.run_id, pa.string()), m))
    valid = valid.append_column("load_source", pa.repeat(pa.scalar(ctx.source, pa.string()), m))
    valid = valid.append_column("loaded_at", pa.repeat(pa.scalar(ctx.loaded_at, TIMESTAMP_UTC), m))
    valid = valid.cast(ARROW_SCHEMA)

    unknown = pc.and_(valid_mask, pc.is_null(facility))
    unknown_ids = (
        set(pc.unique(pc.filter(plaza32, unknown)).to_pylist())
        if pc.any(unknown).as_py()
        else set()
    )

    bad_indices = pc.indices_nonzero(pc.invert(valid_mask)).to_pylist()
    rejects = _rejects(batch, ctx, bad_indices, s, checks, in_range, not_future, day)
    return Normalized(valid, rejects, unknown_ids)


FUTURE_DAYS = 1
"""A record dated later than this many days after the load is rejected."""

_RULE_TEXT = {
    "plaza_id": "plaza_id missing or not a positive integer",
    "date": "date missing or not a date",
    "hour": "hour missing or outside 0-23",
    "direction": "direction not I or O",
    "vehicles_e_zpass": "vehicles_e_zpass missing or not a non-negative integer",
    "vehicles_vtoll": "vehicles_vtoll missing or not a non-negative integer",
}


def _rejects(
    batch: RawBatch,
    ctx: LoadContext,
    indices: list[int],
    strings: dict[str, pa.Array],
    checks: list[tuple[str, pa.Array]],
    in_range: pa.Array,
    not_future: pa.Array,
    day: pa.Array,
) -> pa.Table:
    if not indices:
        return REJECTS_ARROW_SCHEMA.empty_table()
    take = pa.array(indices, pa.int64())
    check_values = {name: pc.take(check, take).to_pylist() for name, check in checks}
    raw_values = {name: pc.take(strings[name], take).to_pylist() for name, _ in checks}
    range_values = pc.take(in_range, take).to_pylist()
    future_values = [not ok for ok in pc.take(not_future, take).to_pylist()]
    days = pc.take(day, take).to_pylist()
    reasons: list[str] = []
    for row, _ in enumerate(indices):
        why = [
            f"{_RULE_TEXT[name]}: {raw_values[name][row]!r}"
            for name, _c in checks
            if not check_values[name][row]
        ]
        if not why and not range_values[row]:
            why.append(f"date {days[row]} outside the load range {ctx.range}")
        if not why and future_values[row]:
            why.append(f"date {days[row]} is more than a day in the future")
        reasons.append("; ".join(why))
    dated = [
        d if ok and not future else None
        for d, ok, future in zip(days, range_values, future_values, strict=True)
    ]
    k = len(indices)
    return pa.table(
        {
            "date": pa.array(dated, pa.date32()),
            "reason": pa.array(reasons, pa.string()),
            "raw_record": pa.array(batch.raw_records(indices), pa.string()),
            "load_range": pa.array([ctx.load_key] * k, pa.string()),
            "load_run_id": pa.array([ctx.run_id] * k, pa.string()),
            "load_source": pa.array([ctx.source] * k, pa.string()),
            "rejected_at": pa.array([ctx.loaded_at] * k, TIMESTAMP_UTC),
        },
        schema=REJECTS_ARROW_SCHEMA,
    )


# ---------------------------------------------------------------- stage: raw -> typed Parquet


@dataclass(frozen=True)
class StageResult:
    valid_url: str
    rejects_url: str
    rows_read: int
    rows_valid: int
    rows_rejected: int
    min_date: date | None
    max_date: date | None
    unknown_fields: list[str]
    unknown_plaza_ids: list[int]
    days: list[date] = field(default_factory=list)
    """Every date with a valid row: what a file load replaces (never the days between)."""


def stage_dir(lake: Lake, run_id: str) -> str:
    return lake.join(STAGE_ZONE, *TABLE.split("."), f"run={run_id}")


def stage(
    lake: Lake,
    raw_urls: list[str],
    ctx: LoadContext,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
    expected_rows: int | None = None,
) -> StageResult:
    """Normalize raw files into typed Parquet files (valid rows, rejects) in the stage zone.

    Streams one raw page or CSV block at a time, so memory is bounded by the batch, not the
    range. Staged files are what the load commits from, so a commit can be replayed.
    """
    target = stage_dir(lake, ctx.run_id)
    valid_url, rejects_url = f"{target}/valid.parquet", f"{target}/rejects.parquet"
    read = valid_rows = rejected = 0
    lo: date | None = None
    hi: date | None = None
    seen: set[str] = set()
    unknown_plazas: set[int] = set()
    days: set[date] = set()
    with (
        lake.open_atomic(valid_url) as valid_out,
        lake.open_atomic(rejects_url) as rejects_out,
        pq.ParquetWriter(valid_out, ARROW_SCHEMA, compression=STAGE_COMPRESSION) as valid_writer,
        pq.ParquetWriter(
            rejects_out, REJECTS_ARROW_SCHEMA, compression=STAGE_COMPRESSION
        ) as reject_writer,
        Progress("normalize", total=expected_rows, logger=log) as progress,
    ):
        for batch in iter_raw_batches(lake, raw_urls):
            seen |= batch.fields_seen
            result = normalize(batch, ctx)
            read += batch.strings.num_rows
            if result.valid.num_rows:
                valid_writer.write_table(result.valid)
                valid_rows += result.valid.num_rows
                bounds = pc.min_max(result.valid.column("date")).as_py()
                lo = bounds["min"] if lo is None else min(lo, bounds["min"])
                hi = bounds["max"] if hi is None else max(hi, bounds["max"])
                days.update(pc.unique(result.valid.column("date")).to_pylist())
            if result.rejects.num_rows:
                reject_writer.write_table(result.rejects)
                rejected += result.rejects.num_rows
            unknown_plazas |= result.unknown_plaza_ids
            progress.advance(batch.strings.num_rows)
    unknown_fields = sorted(seen - set(FIELDS) - set(FIELD_ALIASES))
    if unknown_fields:
        log.warning("ignoring fields not in the B&T schema: %s", ", ".join(unknown_fields))
    if unknown_plazas:
        log.warning(
            "plaza ids with no known facility (loaded, facility NULL): %s",
            ", ".join(map(str, sorted(unknown_plazas))),
        )
    return StageResult(
        valid_url,
        rejects_url,
        read,
        valid_rows,
        rejected,
        lo,
        hi,
        unknown_fields,
        sorted(unknown_plazas),
        sorted(days),
    )


# ---------------------------------------------------------------- load: stage -> Iceberg


def commit_staged(
    catalog: Catalog,
    lake: Lake,
    valid_url: str,
    rejects_url: str,
    load_range: LoadRange,
    load_key: str,
    snapshot_properties: dict[str, str],
    replaced: Slice | None = None,
) -> tuple[CommitResult, CommitResult]:
    """Replace the range in the table and its rejects table, each in one Iceberg commit.

    ``replaced``: the slice to replace instead of the range (a file load: the days it holds).

    The two commits are a moment apart: a crash between them leaves the table at this load and
    its rejects at the previous one (``sql --as-of`` this load then reads the older rejects).
    The table's snapshot records what the rejects commit needs (``rejects-days``, ``load-key``;
    the staged rejects file is found from the run id), so the next load first completes it
    (:func:`repair_rejects`).

    No Prefect here: the flow's ``load`` task calls it under the table's lock, and tests and
    benchmarks drive many daily loads through it without a flow run each.
    """
    from civiclake.slices import Windows

    repair_rejects(catalog, lake)
    spans = (
        [(w.start, w.stop) for w in replaced.windows]
        if isinstance(replaced, Windows)
        else [(load_range.start, load_range.stop)]
    )
    props = {
        **snapshot_properties,
        "rejects-days": ",".join(f"{a.isoformat()}/{b.isoformat()}" for a, b in spans),
        "load-key": load_key,
    }
    main = commit_main(catalog, lake, valid_url, load_range, props, replaced)
    rejects = commit_rejects(catalog, lake, rejects_url, spans, load_key, props)
    return main, rejects


def commit_main(
    catalog: Catalog,
    lake: Lake,
    valid_url: str,
    load_range: LoadRange,
    snapshot_properties: dict[str, str],
    replaced: Slice | None = None,
) -> CommitResult:
    """The first of a load's two commits: the table's slice replaced by the staged rows."""
    from civiclake import tables
    from civiclake.lake import iter_table_chunks

    table = tables.ensure_table(catalog, TABLE, SCHEMA, PARTITION_SPEC)
    table_filter = load_range.table_filter() if replaced is None else replaced.iceberg_filter()
    return tables.replace_range(
        table,
        table_filter,
        lambda: iter_table_chunks(lake, valid_url),
        snapshot_properties,
    )


def commit_rejects(
    catalog: Catalog,
    lake: Lake,
    rejects_url: str,
    spans: list[tuple[date, date]],
    load_key: str,
    snapshot_properties: dict[str, str],
) -> CommitResult:
    """The second commit: rejects dated in the replaced days, or of the same load key."""
    from pyiceberg.expressions import EqualTo, Or

    from civiclake import tables
    from civiclake.lake import iter_table_chunks
    from civiclake.slices import Windows

    days = Windows.of(DATE_FIELD, spans)
    rejects_table = tables.ensure_table(catalog, REJECTS_TABLE, REJECTS_SCHEMA)
    return tables.replace_range(
        rejects_table,
        Or(days.iceberg_filter(), EqualTo("load_range", load_key)),
        lambda: iter_table_chunks(lake, rejects_url),
        snapshot_properties,
    )


def repair_rejects(catalog: Catalog, lake: Lake) -> bool:
    """Complete a load whose rejects commit never happened (a crash between the two commits):
    the table's last load has no rejects snapshot of its run. True when it repaired one."""
    from civiclake.tables.pairs import pending_rejects

    props = pending_rejects(catalog, TABLE, REJECTS_TABLE, "rejects-days")
    if props is None:
        return False
    run_id = props["run-id"]
    url = f"{stage_dir(lake, run_id)}/rejects.parquet"  # where ``stage`` wrote them
    if not lake.exists(url):
        return False
    spans = []
    for span in filter(None, props["rejects-days"].split(",")):
        a, b = span.split("/")
        spans.append((date.fromisoformat(a), date.fromisoformat(b)))
    commit_rejects(catalog, lake, url, spans, props.get("load-key", ""), props)
    logger.warning(
        "completed the rejects commit of run %s (interrupted between its commits)", run_id
    )
    return True
