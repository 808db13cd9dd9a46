"""NYC TLC trip records (yellow, green, FHV): monthly files -> raw zone -> a spec per color.

``download`` lands the file in the raw zone as received (verified complete before it becomes
visible). Each color's ``TlcSpec`` is its ``DatasetSpec`` (``civiclake.pipeline``): the
reader types the raw file with the declared types (CSV, CSV.gz, or Parquet conformed to them),
and the pure ``transform`` applies the three rules (first broken rule wins) for the month the
run context carries; an engine stages the result as Iceberg data files.

Types are declared, never inferred chunk by chunk: pandas' ``read_csv`` in chunks guesses each
chunk's types (``.79``, an all-empty ``ehail_fee``, integer columns with blanks) and the course's
pipeline had to patch them up by hand.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from civiclake.errors import ParameterError, SourceError, describe, first_line
from civiclake.lake import Lake, rebatch
from civiclake.pipeline import REJECT_REASON, RunContext, output_schema
from civiclake.slices import Window

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

logger = logging.getLogger(__name__)

NAMESPACE = "tlc"
# Small CSV blocks bound memory (Arrow reads ahead block by block: with 16 MB blocks it held
# most of a 1.5M-row month); blocks are gathered back into ~128k-row batches for the transform.
CSV_BLOCK_BYTES = 1024 * 1024
PARQUET_BATCH_ROWS = 131_072
TIMESTAMP = pa.timestamp("us")
TIMESTAMP_UTC = pa.timestamp("us", tz="UTC")
MONEY = pa.float64()

RULE_PICKUP_OUTSIDE_MONTH = "pickup_outside_month"
RULE_DROPOFF_BEFORE_PICKUP = "dropoff_before_pickup"
RULE_PASSENGER_COUNT_ZERO = "passenger_count_zero"
RULES = (RULE_PICKUP_OUTSIDE_MONTH, RULE_DROPOFF_BEFORE_PICKUP, RULE_PASSENGER_COUNT_ZERO)
"""Checked in this order; a row is rejected for the first rule it breaks."""


@dataclass(frozen=True)
class TlcSpec:
    """One color of trip records: its columns, declared types and time columns, and its
    ``DatasetSpec`` (``civiclake.pipeline``): the table, the reader and the rules."""

    color: str
    fields: tuple[tuple[str, pa.DataType], ...]
    pickup: str
    dropoff: str
    passenger_count: str | None = "passenger_count"

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema(list(self.fields))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.fields]

    @property
    def table(self) -> str:
        return f"{NAMESPACE}.{self.color}_trips"

    @property
    def rejects_table(self) -> str:
        return f"{NAMESPACE}.{self.color}_trips_rejects"

    # ------------------------------------------------ the DatasetSpec of this color

    def arrow_schema(self) -> pa.Schema:
        return table_schema(self)

    def rejects_schema(self) -> pa.Schema:
        return rejects_schema(self)

    def ensure_tables(self, catalog: Catalog) -> tuple[Table, Table]:
        """The color's table (partitioned by pickup month) and its rejects table, created
        when missing."""
        from civiclake import tables

        return (
            tables.ensure_table_for(catalog, self.table, table_schema(self), month_of=self.pickup),
            tables.ensure_table_for(catalog, self.rejects_table, rejects_schema(self)),
        )

    def read(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        """A raw month (CSV, CSV.gz or Parquet) as batches of exactly this color's declared
        columns and types; a file of another color or an unreadable one is a ``SourceError``."""
        return read_month(lake, url, self)

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        """Pure: the rules (first broken wins) and the load columns on a read batch."""
        return transform(self, batch, ctx)

    def rejects(self, rejected: pa.Table, ctx: RunContext) -> pa.Table:
        """The rejected rows as read, with their month, rule and load columns."""
        month = month_of(ctx)
        n = rejected.num_rows
        columns = [rejected.column(name) for name in self.names]
        return pa.Table.from_arrays(
            [
                *columns,
                pa.repeat(pa.scalar(month.first_day, pa.date32()), n),
                rejected.column(REJECT_REASON),
                rejected.column("load_run_id"),
                rejected.column("loaded_at"),
            ],
            schema=rejects_schema(self),
        )

    def observe(self, rows: pa.Table) -> dict[str, set[Any]]:
        """Nothing: a month's load replaces its month whatever days the file holds."""
        return {}


LOAD_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("load_run_id", pa.string()),
    ("loaded_at", TIMESTAMP_UTC),
)
REJECT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("source_month", pa.date32()),
    ("reject_reason", pa.string()),
)

_MONEY_COLUMNS = (
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
)
YELLOW = TlcSpec(
    color="yellow",
    pickup="tpep_pickup_datetime",
    dropoff="tpep_dropoff_datetime",
    fields=(
        ("VendorID", pa.int32()),
        ("tpep_pickup_datetime", TIMESTAMP),
        ("tpep_dropoff_datetime", TIMESTAMP),
        ("passenger_count", pa.int32()),
        ("trip_distance", pa.float64()),
        ("RatecodeID", pa.int32()),
        ("store_and_fwd_flag", pa.string()),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("payment_type", pa.int32()),
        *((name, MONEY) for name in _MONEY_COLUMNS),
        ("improvement_surcharge", MONEY),
        ("total_amount", MONEY),
        ("congestion_surcharge", MONEY),
    ),
)
GREEN = TlcSpec(
    color="green",
    pickup="lpep_pickup_datetime",
    dropoff="lpep_dropoff_datetime",
    fields=(
        ("VendorID", pa.int32()),
        ("lpep_pickup_datetime", TIMESTAMP),
        ("lpep_dropoff_datetime", TIMESTAMP),
        ("store_and_fwd_flag", pa.string()),
        ("RatecodeID", pa.int32()),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("passenger_count", pa.int32()),
        ("trip_distance", pa.float64()),
        *((name, MONEY) for name in _MONEY_COLUMNS),
        ("ehail_fee", MONEY),
        ("improvement_surcharge", MONEY),
        ("total_amount", MONEY),
        ("payment_type", pa.int32()),
        ("trip_type", pa.int32()),
        ("congestion_surcharge", MONEY),
    ),
)
FHV = TlcSpec(
    color="fhv",
    pickup="pickup_datetime",
    dropoff="dropOff_datetime",
    passenger_count=None,
    fields=(
        ("dispatching_base_num", pa.string()),
        ("pickup_datetime", TIMESTAMP),
        ("dropOff_datetime", TIMESTAMP),
        ("PUlocationID", pa.int32()),
        ("DOlocationID", pa.int32()),
        ("SR_Flag", pa.int32()),
        ("Affiliated_base_number", pa.string()),
    ),
)
COLORS: dict[str, TlcSpec] = {s.color: s for s in (YELLOW, GREEN, FHV)}


def table_schema(spec: TlcSpec) -> pa.Schema:
    return pa.schema([*spec.fields, *LOAD_FIELDS])


def rejects_schema(spec: TlcSpec) -> pa.Schema:
    return pa.schema([*spec.fields, *REJECT_FIELDS, *LOAD_FIELDS])


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1)

    @property
    def stop(self) -> datetime:
        return datetime(self.year + self.month // 12, self.month % 12 + 1, 1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)


def spec_for(color: str) -> TlcSpec:
    try:
        return COLORS[color.strip().lower()]
    except KeyError:
        raise ParameterError(
            f"unknown color {color!r}: choose one of {', '.join(COLORS)}"
        ) from None


def parse_months(text: str, year: int) -> list[Month]:
    """``"10"``, ``"1-3,10"`` -> months of ``year``, sorted, each once."""
    if not 2009 <= year <= 2100:
        raise ParameterError(f"year {year} is outside the TLC record (2009 onwards)")
    months: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d{1,2})(?:\s*-\s*(\d{1,2}))?", part)
        if not match:
            raise ParameterError(f"months: {part!r} is not a month or a range like 1-3")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        for value in (first, last):
            if not 1 <= value <= 12:
                raise ParameterError(f"month {year}-{value:02d} does not exist (months are 1-12)")
        if last < first:
            raise ParameterError(f"months: range {part!r} goes backwards")
        months.update(range(first, last + 1))
    return [Month(year, m) for m in sorted(months)]


# ---------------------------------------------------------------- the spec: read, transform


def context(
    spec: TlcSpec, month: Month, *, run_id: str, now: datetime, source: str = ""
) -> RunContext:
    """A month's run context: its window on the pickup column is the rules' month."""
    return RunContext(
        run_id=run_id,
        source=source or f"tlc:{spec.color}/{month}",
        now=now,
        slice=Window(spec.pickup, month.start, month.stop),
        label=str(month),
        options={"month": str(month)},
    )


def month_of(ctx: RunContext) -> Month:
    year, month = map(int, str(ctx.options["month"]).split("-"))
    return Month(year, month)


def transform(spec: TlcSpec, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
    """The declared columns + ``load_run_id``, ``loaded_at``, the first rule each row breaks
    (NULL if none) and, for a rejected row, the row as read (JSON)."""
    month = month_of(ctx)
    n = batch.num_rows
    pickup = batch.column(spec.pickup)
    dropoff = batch.column(spec.dropoff)
    start = pa.scalar(month.start, TIMESTAMP)
    stop = pa.scalar(month.stop, TIMESTAMP)
    outside = pc.invert(
        pc.fill_null(pc.and_(pc.greater_equal(pickup, start), pc.less(pickup, stop)), False)
    )
    broken = [
        (RULE_PICKUP_OUTSIDE_MONTH, outside),
        (RULE_DROPOFF_BEFORE_PICKUP, pc.fill_null(pc.less(dropoff, pickup), False)),
    ]
    if spec.passenger_count:
        zero = pc.fill_null(pc.equal(batch.column(spec.passenger_count), 0), False)
        broken.append((RULE_PASSENGER_COUNT_ZERO, zero))
    reason = pa.nulls(n, pa.string())
    for rule, mask in reversed(broken):  # the first rule in RULES wins
        reason = pc.if_else(mask, pa.scalar(rule), reason)
    raw = pa.nulls(n, pa.string())
    if reason.null_count < n:
        raw = _raw_records(batch, pc.is_valid(reason))
    return pa.RecordBatch.from_arrays(
        [
            *(batch.column(name) for name in spec.names),
            pa.repeat(pa.scalar(ctx.run_id, pa.string()), n),
            pa.repeat(pa.scalar(ctx.now, TIMESTAMP_UTC), n),
            reason,
            raw,
        ],
        schema=output_schema(spec),
    )


def _raw_records(batch: pa.RecordBatch, rejected: pa.Array) -> pa.Array:
    """JSON text of the rejected rows (few: the valid ones stay NULL, nothing is spent on them)."""
    where = pc.indices_nonzero(rejected).to_pylist()
    records: list[str | None] = [None] * batch.num_rows
    for i, row in zip(where, batch.take(where).to_pylist(), strict=True):
        records[i] = json.dumps(row, default=str)
    return pa.array(records, pa.string())


def read_month(lake: Lake, url: str, spec: TlcSpec) -> Iterator[pa.RecordBatch]:
    """The raw file's batches, typed and conformed (see ``TlcSpec.read``)."""
    _check_columns(lake, url, spec)
    tables = (_iter_parquet if url.endswith(".parquet") else _iter_csv)(lake, url, spec)
    try:
        for table in tables:
            yield from table.combine_chunks().to_batches()
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"cannot read {url}: {first_line(exc)}") from None


def _iter_csv(lake: Lake, url: str, spec: TlcSpec) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    compression = "gzip" if url.endswith(".gz") else None
    local = lake.local_path(url)
    # Arrow's native reader (and gzip) on local files; any fsspec file otherwise
    handle: Any = pa.input_stream(local, compression=compression) if local else lake.open(url)
    stream: Any = handle
    if compression and not local:
        stream = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), compression)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                column_types=spec.arrow,
                include_columns=spec.names,
                include_missing_columns=True,
                timestamp_parsers=[pacsv.ISO8601],  # reads "2020-10-01 00:31:19" natively
                strings_can_be_null=True,
            ),
        )
        for table in rebatch(reader, PARQUET_BATCH_ROWS):
            yield _conform(table, spec)
    finally:
        handle.close()


def _iter_parquet(lake: Lake, url: str, spec: TlcSpec) -> Iterator[pa.Table]:
    with lake.open(url) as handle:
        parquet = pq.ParquetFile(handle)
        available = set(parquet.schema_arrow.names)
        columns = [name for name in spec.names if name in available]
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            yield _conform(pa.Table.from_batches([batch]), spec)


def _conform(table: pa.Table, spec: TlcSpec) -> pa.Table:
    """Exactly the declared columns and types (missing columns as NULL)."""
    arrays = []
    for name, kind in spec.fields:
        if name in table.column_names:
            column = table.column(name)
            arrays.append(column if column.type == kind else pc.cast(column, kind))
        else:
            arrays.append(pa.nulls(table.num_rows, kind))
    return pa.Table.from_arrays(arrays, schema=spec.arrow)


def _check_columns(lake: Lake, url: str, spec: TlcSpec) -> None:
    """Refuse a file that is not this color's (a yellow file given as green, say)."""
    if url.endswith(".parquet"):
        with lake.open(url) as handle:
            try:
                names = set(pq.ParquetFile(handle).schema_arrow.names)
            except (pa.ArrowInvalid, OSError) as exc:  # not Parquet, or cut off
                raise SourceError(f"cannot read {url}: {describe(exc)}") from None
    else:
        import contextlib
        import csv
        import gzip
        import io

        with (
            lake.open(url) as handle,
            gzip.open(handle) if url.endswith(".gz") else contextlib.nullcontext(handle) as raw,
        ):
            try:
                line = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="").readline()
            except (OSError, EOFError) as exc:
                raise SourceError(f"corrupt or truncated file {url} ({exc})") from None
        names = set(next(csv.reader([line]), []))
    missing = [n for n in (spec.pickup, spec.dropoff) if n not in names]
    if missing:
        raise SourceError(f"{url} is not a {spec.color} trip file: no column {', '.join(missing)}")
