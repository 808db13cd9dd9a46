"""MTA Bridges & Tunnels hourly traffic (data.ny.gov ``qzve-kjga``): a small spec on Socrata.

What is B&T's own, as data (``SPEC``, a ``pipeline.DatasetSpec``): the hand-declared Iceberg
schema (its field ids are the table's), ``month(date)`` partitioning, the field aliases
(``vehicles_cash`` is the older ``vehicles_vtoll``), the plaza -> facility lookup, the rules with
their reject texts (every failed rule listed), the future-date rule, the window a range load
replaces (``date``), the rejects layout (``reason``, ``load_range``, the date only when inside
the range) and the reader of its raw formats (the API's JSON pages, a CSV / CSV.gz / JSON
export for ``--from-file``). Fetching is Socrata's (``bnt_fetch``); staging and committing are
the pipeline's (``civiclake.pipeline``).

Partitioning is ``month(date)``: the dataset has about 480 rows a day (10 plazas x 2 directions x
24 hours), ~15k a month, ~2.5M since 2010. Day partitions (the tutorial's ``identity(date)``)
would make ~5,500 files of a few KB; years would make every incremental run rewrite a 175k-row
file. Month keeps ~170 files of healthy size, and a few-day incremental replace rewrites at most
two of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
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

from civiclake.errors import SourceError, first_line
from civiclake.lake import STAGE_ZONE, Lake
from civiclake.pipeline.contract import RAW_RECORD, REJECT_REASON, RunContext, output_schema

# the fetch side lives in bnt_fetch (light imports for a fast first request); re-exported
from civiclake.sources.bnt_fetch import (
    DATASET_ID as DATASET_ID,
    DATE_FIELD as DATE_FIELD,
    REJECTS_TABLE as REJECTS_TABLE,
    TABLE as TABLE,
    LoadRange as LoadRange,
    raw_dir as raw_dir,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from civiclake.slices import Slice

logger = logging.getLogger(__name__)

NAME = "bnt"

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
CSV_BLOCK_BYTES = 16 * 1024 * 1024
JSON_BATCH_ROWS = 100_000
JSON_HEAD_BYTES = 256 * 1024


FILE_TYPES = (".csv", ".json", ".csv.gz", ".json.gz", ".ndjson")


def stage_file(lake: Lake, path: str, *, run_id: str) -> list[str]:
    """Copy a bulk export (CSV or the API's JSON) into the raw zone, atomically."""
    from civiclake.sources.local_file import copy_local_file

    name = path.rstrip("/").rsplit("/", 1)[-1]
    url = f"{lake.raw_dir('files', DATASET_ID, run_id=run_id)}/{name}"
    return [copy_local_file(lake, path, url, FILE_TYPES)]


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


def stage_dir(lake: Lake, run_id: str) -> str:
    """The stage zone of one load (``pipeline.commit`` saves the load there)."""
    return lake.join(STAGE_ZONE, *TABLE.split("."), f"run={run_id}")


def canonical_field(name: str) -> str:
    """Header to field name: ``'# Vehicles - E-ZPass'`` -> ``vehicles_e_zpass``."""
    name = re.sub(r"\(.*?\)", "", name)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
    return FIELD_ALIASES.get(name, name)


def context(
    run_id: str,
    source: str,
    now: datetime,
    load_range: LoadRange | None = None,
    load_key: str | None = None,
) -> RunContext:
    """The run context of a B&T load: its window (None for a file: the file's own days), its
    load key (the range, or the file's source) and the latest date a record may carry (a day
    past today, whichever clock is later: a context may carry an older time)."""
    from civiclake.slices import Window

    today = max(now.date(), date.today())
    return RunContext(
        run_id=run_id,
        source=source,
        now=now,
        slice=None if load_range is None else Window(DATE_FIELD, load_range.start, load_range.stop),
        label=load_key or (str(load_range) if load_range else source),
        options={"latest": today + timedelta(days=FUTURE_DAYS)},
    )


def records_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """API-style records (dicts) as the reader yields them: one string column per field."""
    names: dict[str, None] = {}
    for record in rows:
        names.update(dict.fromkeys(record))
    return pa.RecordBatch.from_pydict({n: _string_column([r.get(n) for r in rows]) for n in names})


def _string_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array(
            [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
            pa.string(),
        )


class BntSpec:
    """B&T as a ``pipeline.DatasetSpec``. Picklable; its only state is which unknown fields
    the reader has already warned about."""

    table = TABLE
    rejects_table = REJECTS_TABLE
    date_field = DATE_FIELD

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def arrow_schema(self) -> pa.Schema:
        return ARROW_SCHEMA

    def rejects_schema(self) -> pa.Schema:
        return REJECTS_ARROW_SCHEMA

    def ensure_tables(self, catalog: Catalog) -> tuple[Table, Table]:
        """Both tables, created when missing (before staging: files are written for the
        table's current partition spec)."""
        from civiclake import tables

        return (
            tables.ensure_table(catalog, TABLE, SCHEMA, PARTITION_SPEC),
            tables.ensure_table(catalog, REJECTS_TABLE, REJECTS_SCHEMA),
        )

    # ------------------------------------------------------------ the reader (I/O edge)

    def read(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        """A raw file as string batches under the names it carries (CSV headers, JSON keys)."""
        kind = _file_format(url.rsplit("/", 1)[-1])
        if kind == "csv":
            yield from self._csv_batches(lake, url)
        elif kind == "json":
            yield from self._json_batches(lake, url)
        else:
            raise SourceError(f"{url}: unsupported raw file")

    def _warn_unknown(self, names: set[str]) -> None:
        unknown = sorted(names - set(FIELDS) - set(FIELD_ALIASES) - self._warned)
        if unknown:
            self._warned.update(unknown)
            logger.warning("ignoring fields not in the B&T schema: %s", ", ".join(unknown))

    def _csv_batches(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        """A CSV export, streamed block by block; every column a string (types are ours)."""
        import pyarrow.csv as pacsv

        originals = _csv_header(lake, url)
        names = [canonical_field(n) for n in originals]
        if not set(KEY_FIELDS) & set(names):
            raise SourceError(f"{url}: header {originals} has none of the B&T columns")
        self._warn_unknown(set(names))
        with lake.open(url) as handle:
            stream: Any = handle
            if url.lower().endswith(".gz"):
                stream = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "gzip")
            yield from pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                convert_options=pacsv.ConvertOptions(
                    strings_can_be_null=False,
                    column_types=dict.fromkeys(originals, pa.string()),
                ),
            )

    def _json_batches(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        """A JSON file (an API page, or an export as an array or newline-delimited), read by
        the raw zone's DuckDB reader: only the B&T fields (and their old names); a field the
        batch has no value of is left out, as the raw record leaves it out."""
        from civiclake.sources._json import read_json

        seen = _json_keys(lake, url)
        if seen is not None:
            if not seen & set(KEY_FIELDS):
                raise SourceError(f"{url}: none of the B&T fields {', '.join(FIELDS)}")
            self._warn_unknown(seen)
        yield from read_json(
            lake,
            url,
            (*FIELDS, *FIELD_ALIASES),
            batch_rows=JSON_BATCH_ROWS,
            newline_delimited=True,
            drop_null_columns=True,
            error=lambda exc: SourceError(f"{url}: not readable JSON: {first_line(exc)}"),
        )

    # ------------------------------------------------------------ the pure transform

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        """Typed rows; a row failing any rule carries every failed rule as its reason, and its
        record as received."""
        s = _canonical_strings(batch)
        n = batch.num_rows
        plaza, plaza_ok = _parse_int(s["plaza_id"])
        day, day_ok = _parse_date(s["date"])
        hour, hour_ok = _parse_int(s["hour"])
        hour_ok = pc.and_(
            hour_ok,
            pc.fill_null(pc.and_(pc.greater_equal(hour, 0), pc.less_equal(hour, 23)), False),
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
        in_range = _in_window(day, ctx.slice, n)
        # a date past tomorrow (any time zone's today) is a typo or a test row: a reject with
        # its reason, never the end of the range a file load replaces
        not_future = pc.fill_null(pc.less_equal(day, _latest(ctx)), True)
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
        reason, raw = _reasons(batch, ctx, ok, s, checks, in_range, not_future, day)
        columns = [
            plaza32,
            pc.take(_FACILITY_LOOKUP, lookup_index),
            day,
            pc.cast(pc.if_else(hour_ok, hour, None), pa.int32()),
            direction,
            counts["vehicles_e_zpass"],
            counts["vehicles_vtoll"],
            pa.repeat(pa.scalar(ctx.run_id, pa.string()), n),
            pa.repeat(pa.scalar(ctx.source, pa.string()), n),
            pa.repeat(pa.scalar(ctx.now, TIMESTAMP_UTC), n),
            reason,
            raw,
        ]
        return pa.RecordBatch.from_arrays(columns, schema=output_schema(self))

    def rejects(self, rejected: pa.Table, ctx: RunContext) -> pa.Table:
        """Rejected rows in the rejects layout: dated only when inside the load's window and not
        in the future (so a reload of the range replaces them; the others by ``load_range``)."""
        k = rejected.num_rows
        day = rejected.column("date")
        inside = pc.and_(
            _in_window(day, ctx.slice, k),
            pc.fill_null(pc.less_equal(day, _latest(ctx)), True),
        )
        return pa.table(
            {
                "date": pc.if_else(inside, day, pa.scalar(None, pa.date32())),
                "reason": rejected.column(REJECT_REASON),
                "raw_record": rejected.column(RAW_RECORD),
                "load_range": pa.repeat(pa.scalar(ctx.label, pa.string()), k),
                "load_run_id": pa.repeat(pa.scalar(ctx.run_id, pa.string()), k),
                "load_source": pa.repeat(pa.scalar(ctx.source, pa.string()), k),
                "rejected_at": pa.repeat(pa.scalar(ctx.now, TIMESTAMP_UTC), k),
            },
            schema=REJECTS_ARROW_SCHEMA,
        )

    def observe(self, rows: pa.Table) -> dict[str, set[Any]]:
        """The days loaded (what a file load replaces) and plaza ids with no known facility."""
        unknown = pc.and_(pc.is_null(rows.column("facility")), pc.is_valid(rows.column("plaza_id")))
        return {
            "days": set(pc.unique(rows.column("date")).to_pylist()),
            "unknown_plaza_ids": set(
                pc.unique(pc.filter(rows.column("plaza_id"), unknown)).to_pylist()
            ),
        }


SPEC = BntSpec()


def _canonical_strings(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """The batch's columns under canonical field names; a field given under both its name and
    an older one takes the first non-null (the current name first)."""
    by_field: dict[str, list[pa.Array]] = {}
    for original, column in zip(batch.schema.names, batch.columns, strict=True):
        name = canonical_field(original)
        values = column if column.type == pa.string() else pc.cast(column, pa.string())
        if original == name:
            by_field.setdefault(name, []).insert(0, values)
        else:
            by_field.setdefault(name, []).append(values)
    out = {}
    for name in FIELDS:
        found = by_field.get(name)
        if not found:
            out[name] = pa.nulls(batch.num_rows, pa.string())
        else:
            out[name] = found[0] if len(found) == 1 else pc.coalesce(*found)
    return out


def _latest(ctx: RunContext) -> pa.Scalar:
    latest = ctx.options.get("latest") or ctx.now.date() + timedelta(days=FUTURE_DAYS)
    return pa.scalar(latest, pa.date32())


def _in_window(day: Any, window: Slice | None, n: int) -> Any:
    """Whether each date lies inside the load's window (always, for a load without one)."""
    if window is None:
        return pa.repeat(pa.scalar(True), n)
    start, stop = getattr(window, "start"), getattr(window, "stop")  # noqa: B009
    return pc.fill_null(
        pc.and_(
            pc.greater_equal(day, pa.scalar(start, pa.date32())),
            pc.less(day, pa.scalar(stop, pa.date32())),
        ),
        False,
    )


def _window_text(window: Slice | None) -> str:
    start, stop = getattr(window, "start"), getattr(window, "stop")  # noqa: B009
    return f"{start.isoformat()}/{stop.isoformat()}"


def _reasons(
    batch: pa.RecordBatch,
    ctx: RunContext,
    ok: pa.Array,
    strings: dict[str, pa.Array],
    checks: list[tuple[str, pa.Array]],
    in_range: pa.Array,
    not_future: pa.Array,
    day: pa.Array,
) -> tuple[pa.Array, pa.Array]:
    """The reject reason and raw record columns: NULL for valid rows, built only for the
    rejected ones (few)."""
    n = batch.num_rows
    rejected = pc.invert(ok)
    bad = pc.indices_nonzero(rejected)
    if len(bad) == 0:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    check_values = {name: pc.take(check, bad).to_pylist() for name, check in checks}
    raw_values = {name: pc.take(strings[name], bad).to_pylist() for name, _ in checks}
    range_values = pc.take(in_range, bad).to_pylist()
    future_values = [not ok for ok in pc.take(not_future, bad).to_pylist()]
    days = pc.take(day, bad).to_pylist()
    reasons: list[str] = []
    for row in range(len(bad)):
        why = [
            f"{_RULE_TEXT[name]}: {raw_values[name][row]!r}"
            for name, _c in checks
            if not check_values[name][row]
        ]
        if not why and not range_values[row]:
            why.append(f"date {days[row]} outside the load range {_window_text(ctx.slice)}")
        if not why and future_values[row]:
            why.append(f"date {days[row]} is more than a day in the future")
        reasons.append("; ".join(why))
    records = [
        orjson.dumps({k: v for k, v in r.items() if v is not None}).decode()
        for r in batch.take(bad).to_pylist()
    ]
    return (
        pc.replace_with_mask(pa.nulls(n, pa.string()), rejected, pa.array(reasons, pa.string())),
        pc.replace_with_mask(pa.nulls(n, pa.string()), rejected, pa.array(records, pa.string())),
    )


def _json_keys(lake: Lake, url: str) -> set[str] | None:
    """The keys of a JSON file's first records, from its head (a cheap look for the warning
    about unknown fields and the check that it is B&T at all; a whole pass would cost as much
    as the read). None when the head holds no key (the read then says what is wrong)."""
    import gzip

    with lake.open(url) as handle:
        if url.lower().endswith(".gz"):
            with gzip.open(handle) as unpacked:
                head = unpacked.read(JSON_HEAD_BYTES)
        else:
            head = handle.read(JSON_HEAD_BYTES)
    keys = {k.decode("utf-8", "replace") for k in re.findall(rb'"([^"\\]{1,200})"\s*:', head)}
    return keys or None


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
