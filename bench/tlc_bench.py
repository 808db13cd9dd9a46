"""Benchmark the NYC TLC pipeline against the course's way and the floor, in the same run.

The month: the real green October 2020 file (95,120 rows) repeated ``--rows-factor`` times
(copy k with pickup and dropoff shifted by k seconds, every other field kept as published
text), written once as a plain ``.csv`` and a ``.csv.gz``.

Ours: ``tlc_fetch.stage_local_file`` + the engine's stage (CSV -> typed, ruled Iceberg data files,
each row written once) + ``pipeline.commit``. For PostgreSQL, what the flow runs (its
``stage-load-warehouse`` then ``load`` tasks): the stage with its valid batches streamed
into ``PostgresWarehouse.range_load`` (one transaction: DELETE the month, COPY each batch as it
is typed, then the staged rejects, COMMIT), then the Iceberg commits; for comparison, the same
with the code before the one pipeline (``before-csv-postgres``: the wheel in tests/fixtures on
PYTHONPATH, ``tlc.convert`` then ``tables.replace_range``), and the simpler two steps (stage and
commit, then ``replace_range`` of the committed data files into PostgreSQL).

The course's way (DataTalksClub data-engineering zoomcamp): ``pd.read_csv`` then ``to_parquet``
for the lake; ``pd.read_csv(iterator=True, chunksize=100000)`` + ``pd.to_datetime`` +
``df.to_sql`` (SQLAlchemy, psycopg 3) for PostgreSQL, on the first ``--baseline-rows`` rows.

The floor: ``psql -c "\\copy ... FROM 'month.csv' WITH (FORMAT csv, HEADER true)"``.

One real PostgreSQL (``testsupport.postgres``) serves every phase, each phase loading into
its own fresh table, after an untimed VACUUM (ANALYZE) and CHECKPOINT. Every measured phase runs
in its own fresh child process (this script with ``--phase``), so each peak RSS belongs to that
phase alone. The month is built in a child too: Linux carries the peak RSS (``ru_maxrss``) of a
parent over fork + exec, so the parent stays small. Figures are printed, never asserted.

    .venv/bin/python bench/tlc_bench.py [--rows-factor 16] [--baseline-rows N] [--skip-baseline]
        [--repeat N]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

SOURCE = Path("/work/shared/data/tlc/green_tripdata_2020-10.csv.gz")
COLOR = "green"
YEAR, MONTH = 2020, 10
CSV_NAME = "green_tripdata_2020-10.csv"
GZ_NAME = CSV_NAME + ".gz"
TIME_COLUMNS = ("lpep_pickup_datetime", "lpep_dropoff_datetime")
RUN_ID = "bench-ours"
OURS_TABLE = "tlc.green_trips"
OURS_REJECTS_TABLE = "tlc.green_trips_rejects"
BEFORE_TABLE = "before.green_trips"
BEFORE_REJECTS_TABLE = "before.green_trips_rejects"
TWO_STEP_TABLE = "twostep.green_trips"
TWO_STEP_REJECTS_TABLE = "twostep.green_trips_rejects"
COURSE_TABLE = "green_taxi_data"  # public schema, as the course names it
COPY_TABLE = "floor.green_trips"
COURSE_CHUNK_ROWS = 100_000
GZIP_LEVEL = 6  # gzip(1)'s default
WRITE_BATCH_ROWS = 50_000
PHASE_TIMEOUT = 3600.0

RSS_TARGET_MB = 600.0
TO_SQL_SPEEDUP_TARGET = 20.0  # ours CSV -> PG rows/s over to_sql's
COPY_RATIO_TARGET = 1.3  # ours CSV -> PG seconds over \copy's
PANDAS_SPEEDUP_TARGET = 5.0  # pandas CSV -> Parquet seconds over ours
PANDAS_RSS_RATIO_TARGET = 0.2  # ours CSV -> Parquet peak RSS over pandas'

OURS_PHASES = ("ours-csv-parquet", "ours-csv-postgres", "ours-two-step-postgres")
PANDAS_PHASES = ("pandas-csv-parquet", "course-to-sql")
BEFORE_PHASES = ("before-csv-postgres",)
REPEATED = ("ours-csv-postgres", "before-csv-postgres")
"""Run ``--repeat`` times, alternating which goes first."""
"""Run with the code before the one pipeline (the wheel in tests/fixtures) on PYTHONPATH."""
BEFORE_WHEEL = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/civiclake-6893fc3-py3-none-any.whl"
)
PG_PHASES = (
    "ours-csv-postgres",
    "before-csv-postgres",
    "ours-two-step-postgres",
    "course-to-sql",
    "psql-copy",
)
PHASE_ORDER = (
    "ours-csv-parquet",
    "pandas-csv-parquet",
    "psql-copy",
    "ours-csv-postgres",
    "before-csv-postgres",
    "ours-two-step-postgres",
    "course-to-sql",
)

Result = dict[str, Any]


# ---------------------------------------------------------------- shared helpers


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (``ru_maxrss`` is KB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system, every thread): under other load on the
    machine, a steadier measure of the work than wall seconds (PostgreSQL's own CPU excluded)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_peak_rss_mb() -> float:
    """The largest peak RSS among this process's waited-for children, in MB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def sql_columns() -> list[tuple[str, str]]:
    """``GREEN``'s columns with the PostgreSQL types ours creates (without the load columns)."""
    import pyarrow as pa

    from civiclake.sources import tlc

    def kind(dtype: pa.DataType) -> str:
        if pa.types.is_int32(dtype):
            return "integer"
        if pa.types.is_float64(dtype):
            return "double precision"
        if pa.types.is_timestamp(dtype):
            return "timestamp without time zone"
        if pa.types.is_string(dtype):
            return "text"
        raise ValueError(f"no PostgreSQL type for {dtype}")

    return [(name, kind(dtype)) for name, dtype in tlc.GREEN.fields]


def quote_ident(name: str) -> str:
    """A quoted SQL identifier (``VendorID`` keeps its case)."""
    return '"' + name.replace('"', '""') + '"'


def month() -> Any:
    """The month every phase loads: ``tlc.Month(2020, 10)``."""
    from civiclake.sources import tlc

    return tlc.Month(YEAR, MONTH)


# ---------------------------------------------------------------- child phases


def green_tables() -> tuple[Any, Any]:
    """The green table and its rejects table, created before any timing (as from the second
    month on: a month's load finds them)."""
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.sources import tlc

    spec = tlc.GREEN
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table_for(
        catalog, spec.table, tlc.table_schema(spec), month_of=spec.pickup
    )
    rejects = tables.ensure_table_for(catalog, spec.rejects_table, tlc.rejects_schema(spec))
    return table, rejects


def _ours_stage(lake: Any, raw_url: str, tables: tuple[Any, Any], sink: Any = None) -> Any:
    """The flow's stage of the month: the engine's data files (nothing committed)."""
    from datetime import UTC

    from civiclake.pipeline.engines import get_stage
    from civiclake.sources import tlc

    ctx = tlc.context(tlc.GREEN, month(), run_id=RUN_ID, now=datetime.now(UTC))
    table, rejects = tables
    return get_stage()(
        tlc.GREEN, lake, [raw_url], ctx, table=table, rejects_table=rejects, sink=sink
    )


def _ours_commit(lake: Any, tables: tuple[Any, Any], staged: Any) -> Any:
    """The flow's commit of the month: its table, then its rejects."""
    from civiclake.pipeline.commit import Load, commit
    from civiclake.slices import Window

    the_month = month()
    load = Load(
        staged,
        Window(TIME_COLUMNS[0], the_month.start, the_month.stop),
        Window("source_month", the_month.first_day, the_month.first_day + timedelta(days=1)),
        {"run-id": RUN_ID},
    )
    return commit(lake, *tables, load)


def phase_ours_csv_parquet(data: Path, args: argparse.Namespace) -> Result:
    """``stage_local_file`` of the .csv.gz, the engine's stage (Iceberg data files, the
    table's Parquet) and the commit of the table and its rejects, in a temp file:// lake."""
    from civiclake.config import get_settings
    from civiclake.sources import tlc, tlc_fetch

    import_rss = peak_rss_mb()
    lake = get_settings().lake()
    both = green_tables()
    began = time.perf_counter()
    raw_url = tlc_fetch.stage_local_file(lake, str(data / GZ_NAME), COLOR, month())
    stage_seconds = time.perf_counter() - began
    began = time.perf_counter()
    staged = _ours_stage(lake, raw_url, both)
    convert_seconds = time.perf_counter() - began
    began = time.perf_counter()
    _ours_commit(lake, both, staged)
    commit_seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    return {
        "rows": staged.rows_read,
        "rows_valid": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "rejected_by_rule": {r: staged.rejected_by_reason.get(r, 0) for r in tlc.RULES},
        "parquet_mb": sum(f.file_size_in_bytes for f in staged.data.files + staged.rejects.files)
        / 1e6,
        "stage_seconds": stage_seconds,
        "convert_seconds": convert_seconds,
        "commit_seconds": commit_seconds,
        "seconds": stage_seconds + convert_seconds + commit_seconds,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_pandas_csv_parquet(data: Path, args: argparse.Namespace) -> Result:
    """``pd.read_csv`` of the whole .csv.gz (default inference), then ``df.to_parquet``."""
    import pandas as pd

    from civiclake.sources import tlc

    import_rss = peak_rss_mb()
    out = data.parent / "pandas" / "green_tripdata_2020-10.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = pd.read_csv(data / GZ_NAME)
    read_seconds = time.perf_counter() - began
    read_peak = peak_rss_mb()
    began = time.perf_counter()
    frame.to_parquet(out)
    write_seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    declared_int = [name for name, dtype in tlc.GREEN.fields if str(dtype) == "int32"]
    return {
        "rows": len(frame),
        "parquet_mb": out.stat().st_size / 1e6,
        "read_seconds": read_seconds,
        "write_seconds": write_seconds,
        "seconds": read_seconds + write_seconds,
        "read_peak_rss_mb": read_peak,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
        "warnings": sorted({type(w.message).__name__ for w in caught}),
        "dtypes": {name: str(frame[name].dtype) for name in frame.columns},
        "int_columns_not_int": [
            name for name in declared_int if not str(frame[name].dtype).startswith("int")
        ],
    }


def rejects_range(the_month: Any) -> dict[str, Any]:
    """The rejects table's range for the month, as the flow gives it."""
    return {
        "column": "source_month",
        "start": the_month.first_day,
        "stop": the_month.first_day + timedelta(days=1),
    }


def phase_ours_csv_postgres(data: Path, args: argparse.Namespace) -> Result:
    """CSV month -> PostgreSQL + Iceberg as the flow does it (``stage-load-warehouse`` then
    ``load-iceberg``): the engine's stage with its valid batches streamed into ``range_load``,
    the staged rejects in the same transaction, COMMIT; then the Iceberg commits."""
    import pyarrow.parquet as pq

    from civiclake.config import get_settings
    from civiclake.sources import tlc, tlc_fetch
    from civiclake.warehouse.postgres import PostgresWarehouse

    import_rss = peak_rss_mb()
    settings = get_settings()
    lake = settings.lake()
    the_month, spec = month(), tlc.GREEN
    both = green_tables()
    cpu = cpu_seconds()
    began = time.perf_counter()
    raw_url = tlc_fetch.stage_local_file(lake, str(data / GZ_NAME), COLOR, the_month)
    with PostgresWarehouse.from_settings(settings) as warehouse:
        with warehouse.range_load(
            OURS_TABLE,
            tlc.table_schema(spec),
            column=spec.pickup,
            start=the_month.start,
            stop=the_month.stop,
        ) as load:
            staged = _ours_stage(lake, raw_url, both, sink=load.write)
            convert_seconds = time.perf_counter() - began
            convert_peak = peak_rss_mb()
            loaded = load.finish()
            copy_seconds = time.perf_counter() - began
            rejects_loaded = load.replace_range(
                OURS_REJECTS_TABLE,
                tlc.rejects_schema(spec),
                staged.rejects_urls,
                lake,
                **rejects_range(the_month),
            )
        postgres_seconds = time.perf_counter() - began  # committed
        _ours_commit(lake, both, staged)
        seconds = time.perf_counter() - began  # and Iceberg committed
        cpu = cpu_seconds() - cpu
        peak = peak_rss_mb()
        table_rows = warehouse.count(OURS_TABLE)
        rejects_rows = warehouse.count(OURS_REJECTS_TABLE)
        column_types = warehouse.column_types(OURS_TABLE)
    parquet_rows = [
        sum(pq.ParquetFile(lake.local_path(url)).metadata.num_rows for url in urls)
        for urls in (staged.data_urls, staged.rejects_urls)
    ]
    return {
        "rows": staged.rows_read,
        "rows_valid": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "rows_loaded": loaded,
        "rejects_loaded": rejects_loaded,
        "table_rows": table_rows,
        "rejects_rows": rejects_rows,
        "parquet_rows": parquet_rows,
        "iceberg_rows": int(both[0].current_snapshot().summary["total-records"]),
        "column_types": column_types,
        "convert_seconds": convert_seconds,
        "copy_seconds": copy_seconds,
        "postgres_seconds": postgres_seconds,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "convert_peak_rss_mb": convert_peak,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_before_csv_postgres(data: Path, args: argparse.Namespace) -> Result:
    """The same, as the flow did it before the one pipeline (run with the wheel of
    tests/fixtures on PYTHONPATH): ``tlc.convert`` (zstd stage Parquet) with its valid
    batches streamed into ``range_load``, the rejects file, COMMIT; then ``load-iceberg``
    read the stage Parquet back and rewrote it into Iceberg (``tables.replace_range``)."""
    import civiclake
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.lake import iter_table_chunks  # (before: still there)
    from civiclake.slices import Window
    from civiclake.sources import tlc
    from civiclake.warehouse.postgres import PostgresWarehouse

    if not hasattr(tlc, "convert"):
        raise RuntimeError(f"not the code before the one pipeline: {civiclake.__file__}")
    import_rss = peak_rss_mb()
    settings = get_settings()
    lake = settings.lake()
    the_month, spec = month(), tlc.GREEN
    table, rejects = green_tables()
    cpu = cpu_seconds()
    began = time.perf_counter()
    raw_url = tlc.stage_local_file(lake, str(data / GZ_NAME), COLOR, the_month)  # (before)
    with PostgresWarehouse.from_settings(settings) as warehouse:
        with warehouse.range_load(
            BEFORE_TABLE,
            tlc.table_schema(spec),
            column=spec.pickup,
            start=the_month.start,
            stop=the_month.stop,
        ) as load:
            conversion = tlc.convert(lake, raw_url, spec, the_month, run_id=RUN_ID, sink=load.write)
            convert_seconds = time.perf_counter() - began
            loaded = load.finish()
            copy_seconds = time.perf_counter() - began
            load.replace_range(
                BEFORE_REJECTS_TABLE,
                tlc.rejects_schema(spec),
                [conversion.rejects_url],
                lake,
                **rejects_range(the_month),
            )
        postgres_seconds = time.perf_counter() - began  # committed
        window = Window(spec.pickup, the_month.start, the_month.stop)
        props = {"run-id": RUN_ID}
        tables.replace_range(
            table,
            window.iceberg_filter(),
            lambda: iter_table_chunks(lake, conversion.valid_url),
            props,
        )
        tables.replace_range(
            rejects,
            Window(**rejects_range(the_month)).iceberg_filter(),
            lambda: iter_table_chunks(lake, conversion.rejects_url),
            props,
        )
        seconds = time.perf_counter() - began  # and Iceberg committed
        cpu = cpu_seconds() - cpu
        peak = peak_rss_mb()
        table_rows = warehouse.count(BEFORE_TABLE)
    return {
        "rows": conversion.rows_read,
        "rows_valid": conversion.rows_valid,
        "rows_loaded": loaded,
        "table_rows": table_rows,
        "convert_seconds": convert_seconds,
        "copy_seconds": copy_seconds,
        "postgres_seconds": postgres_seconds,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_ours_two_step_postgres(data: Path, args: argparse.Namespace) -> Result:
    """The simpler way, for comparison: stage + commit into Iceberg, then PostgreSQL loaded
    from the committed data files (``replace``, what ``load-warehouse`` does for the other
    warehouses)."""
    from civiclake.config import get_settings
    from civiclake.sources import tlc, tlc_fetch
    from civiclake.warehouse import open_warehouse

    import_rss = peak_rss_mb()
    settings = get_settings()
    lake = settings.lake()
    the_month, spec = month(), tlc.GREEN
    both = green_tables()
    began = time.perf_counter()
    raw_url = tlc_fetch.stage_local_file(lake, str(data / GZ_NAME), COLOR, the_month)
    staged = _ours_stage(lake, raw_url, both)
    _ours_commit(lake, both, staged)
    convert_seconds = time.perf_counter() - began
    convert_peak = peak_rss_mb()
    began = time.perf_counter()
    with open_warehouse("postgres", settings) as warehouse:
        loaded = warehouse.replace_range(
            TWO_STEP_TABLE,
            tlc.table_schema(spec),
            staged.data_urls,
            lake,
            column=spec.pickup,
            start=the_month.start,
            stop=the_month.stop,
        )
        warehouse.replace_range(
            TWO_STEP_REJECTS_TABLE,
            tlc.rejects_schema(spec),
            staged.rejects_urls,
            lake,
            **rejects_range(the_month),
        )
        load_seconds = time.perf_counter() - began
        peak = peak_rss_mb()
        table_rows = warehouse.count(TWO_STEP_TABLE)
    return {
        "rows": staged.rows_read,
        "rows_valid": staged.rows_valid,
        "rows_loaded": loaded,
        "table_rows": table_rows,
        "convert_seconds": convert_seconds,
        "load_seconds": load_seconds,
        "seconds": convert_seconds + load_seconds,
        "convert_peak_rss_mb": convert_peak,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_course_to_sql(data: Path, args: argparse.Namespace) -> Result:
    """The course's ingest: read_csv in chunks of 100,000, to_datetime, ``to_sql`` appends."""
    import pandas as pd
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    import_rss = peak_rss_mb()
    url = make_url(os.environ["CIVICLAKE_POSTGRES_URL"]).set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks = pd.read_csv(
            data / GZ_NAME,
            iterator=True,
            chunksize=COURSE_CHUNK_ROWS,
            nrows=args.baseline_rows,
        )
        rows = 0
        first = True
        for frame in chunks:
            frame.lpep_pickup_datetime = pd.to_datetime(frame.lpep_pickup_datetime)
            frame.lpep_dropoff_datetime = pd.to_datetime(frame.lpep_dropoff_datetime)
            if first:
                frame.head(n=0).to_sql(name=COURSE_TABLE, con=engine, if_exists="replace")
                first = False
            frame.to_sql(name=COURSE_TABLE, con=engine, if_exists="append")
            rows += len(frame)
    seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    with engine.connect() as conn:
        table_rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {COURSE_TABLE}").scalar_one())
        column_types = {
            str(name): str(kind)
            for name, kind in conn.exec_driver_sql(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                {"table": COURSE_TABLE},
            )
        }
    engine.dispose()
    return {
        "rows": rows,
        "table_rows": table_rows,
        "column_types": column_types,
        "warnings": sorted({type(w.message).__name__ for w in caught}),
        "seconds": seconds,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_psql_copy(data: Path, args: argparse.Namespace) -> Result:
    r"""The floor: ``psql -c "\copy"`` of the plain CSV into a table with ours' column types."""
    import psycopg

    from testsupport.postgres import find_binaries

    import_rss = peak_rss_mb()
    url = os.environ["CIVICLAKE_POSTGRES_URL"]
    schema, name = COPY_TABLE.split(".")
    target = f"{quote_ident(schema)}.{quote_ident(name)}"
    columns = ", ".join(f"{quote_ident(n)} {kind}" for n, kind in sql_columns())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        conn.execute(f"DROP TABLE IF EXISTS {target}")
        conn.execute(f"CREATE TABLE {target} ({columns})")
    path = str(data / CSV_NAME).replace("'", "''")
    command = [str(find_binaries().psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", url]
    command += ["-c", f"\\copy {target} FROM '{path}' WITH (FORMAT csv, HEADER true)"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"psql \\copy failed (exit {done.returncode}): {done.stderr.strip()}")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {target}").fetchone()
    table_rows = int(row[0]) if row else 0
    return {
        "rows": table_rows,
        "table_rows": table_rows,
        "seconds": seconds,
        "psql_peak_rss_mb": children_peak_rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
        "import_rss_mb": import_rss,
    }


def phase_build_month(data: Path, args: argparse.Namespace) -> Result:
    """Not measured: build the month in a child, so the parent's peak RSS stays small.

    Linux carries a process's peak RSS (``ru_maxrss``) over ``fork`` + ``exec``: every child
    would report at least the parent's peak, and holding the source rows here costs ~150 MB.
    """
    return build_month(args.rows_factor, data)


def build_month(factor: int, out_dir: Path) -> Result:
    """Write the real month repeated ``factor`` times (copy k shifted by k seconds), as text.

    A timestamp is shifted only when it reads back exactly as ``%Y-%m-%d %H:%M:%S``; every
    other field (empty fields, ``.79`` ...) is written as published. Line endings stay CRLF.
    """
    began = time.perf_counter()
    with gzip.open(SOURCE, "rt", encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        header = next(reader)
        rows = list(reader)
    positions = [header.index(name) for name in TIME_COLUMNS]
    parsed: list[list[datetime | None]] = []
    for row in rows:
        times: list[datetime | None] = []
        for i in positions:
            try:
                value: datetime | None = datetime.fromisoformat(row[i])
            except ValueError:
                value = None
            if value is not None and value.isoformat(sep=" ") != row[i]:
                value = None  # not exactly the published format: keep the text as it is
            times.append(value)
        parsed.append(times)
    plain = out_dir / CSV_NAME
    with open(plain, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        for k in range(factor):
            shift = timedelta(seconds=k)
            batch: list[list[str]] = []
            for row, times in zip(rows, parsed, strict=True):
                if k:
                    row = row.copy()
                    for i, value in zip(positions, times, strict=True):
                        if value is not None:
                            row[i] = (value + shift).isoformat(sep=" ")
                batch.append(row)
                if len(batch) >= WRITE_BATCH_ROWS:
                    writer.writerows(batch)
                    batch = []
            writer.writerows(batch)
    with open(plain, "rb") as src, gzip.open(out_dir / GZ_NAME, "wb", GZIP_LEVEL) as dst:
        shutil.copyfileobj(src, dst, 8 * 1024 * 1024)
    return {
        "rows": len(rows) * factor,
        "source_rows": len(rows),
        "columns": len(header),
        "csv_mb": plain.stat().st_size / 1e6,
        "gz_mb": (out_dir / GZ_NAME).stat().st_size / 1e6,
        "seconds": time.perf_counter() - began,
        "peak_rss_mb": peak_rss_mb(),
    }


PHASES: dict[str, Callable[[Path, argparse.Namespace], Result]] = {
    "build-month": phase_build_month,
    "ours-csv-parquet": phase_ours_csv_parquet,
    "pandas-csv-parquet": phase_pandas_csv_parquet,
    "ours-csv-postgres": phase_ours_csv_postgres,
    "before-csv-postgres": phase_before_csv_postgres,
    "ours-two-step-postgres": phase_ours_two_step_postgres,
    "course-to-sql": phase_course_to_sql,
    "psql-copy": phase_psql_copy,
}


def run_phase(name: str, args: argparse.Namespace) -> None:
    """Child side: run one phase and print its measurements as one JSON line."""
    result = PHASES[name](Path(args.data_dir), args)
    print(json.dumps({"phase": name, **result}), flush=True)


# ---------------------------------------------------------------- parent: data, server, children


def child_env(home: Path, postgres_url: str | None) -> dict[str, str]:
    """A phase's environment: a private CIVICLAKE_HOME, the bench's PostgreSQL, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIVICLAKE_", "PG"))}
    env.update(CIVICLAKE_HOME=str(home), DO_NOT_TRACK="1")
    if postgres_url:
        env["CIVICLAKE_POSTGRES_URL"] = postgres_url
    return env


def run_child(name: str, args: argparse.Namespace, data: Path, env: dict[str, str]) -> Result:
    """Run one phase in a fresh interpreter and return its JSON line."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        name,
        "--data-dir",
        str(data),
        "--baseline-rows",
        str(args.baseline_rows),
        "--rows-factor",
        str(args.rows_factor),
    ]
    began = time.perf_counter()
    done = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, text=True, timeout=PHASE_TIMEOUT, check=False
    )
    wall = time.perf_counter() - began
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"phase {name} failed (exit {done.returncode}):\n{done.stdout}")
    result: Result = json.loads(lines[-1])
    result["process_seconds"] = wall
    print(
        f"  {name:<20} {result['rows']:>12,} rows  {result['seconds']:8.2f} s  "
        f"peak RSS {result['peak_rss_mb']:7.1f} MB  (process {wall:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def median_run(done: list[Result]) -> Result:
    """The run with the median seconds, with every run's seconds (and CPU seconds) listed."""
    ranked = sorted(done, key=lambda r: r["seconds"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["all_seconds"] = [r["seconds"] for r in done]
    chosen["all_cpu_seconds"] = [r["cpu_seconds"] for r in done if "cpu_seconds" in r]
    return chosen


def unpack_before(workdir: Path) -> Path:
    """The code before the one pipeline, unpacked from its wheel (once)."""
    import zipfile

    target = workdir / "before-code"
    if not target.exists():
        with zipfile.ZipFile(BEFORE_WHEEL) as wheel:
            wheel.extractall(target)
    return target


def settle(psql: Path, url: str, admin_url: str) -> None:
    """Between PostgreSQL phases: VACUUM (ANALYZE) and CHECKPOINT, outside every timing.

    The vacuum leaves autovacuum nothing to do on the tables loaded so far (it would otherwise
    scan a fresh 1.5M-row table during a later phase), the checkpoint writes out their dirty
    pages. Through ``psql``: the parent imports no driver, so its peak RSS (which every
    child's ``ru_maxrss`` starts from) stays small.
    """
    for target, sql in ((url, "VACUUM (ANALYZE)"), (admin_url, "CHECKPOINT")):
        command = [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", target, "-c", sql]
        subprocess.run(command, check=True, capture_output=True, timeout=600)


def server_peak_rss_mb(data_dir: Path) -> float | None:
    """The postmaster's peak RSS (VmHWM), or None where /proc or the pid file is missing."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ---------------------------------------------------------------- parent: report


def rate(rows: int, seconds: float) -> float:
    """Rows per second (inf for a zero duration)."""
    return rows / seconds if seconds > 0 else float("inf")


def ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` as ``1.23x``."""
    return f"{numerator / denominator:7.2f}x" if denominator > 0 else "      -"


def verdict(ok: bool) -> str:
    """How a target is reported: never an exit status."""
    return "met" if ok else "NOT met"


class Table:
    """Fixed-width lines: phase, rows, seconds, rows/s, peak RSS, RSS after imports."""

    HEADER = (
        f"{'phase':<46} {'rows':>10} {'seconds':>8} {'rows/s':>10} "
        f"{'peak RSS MB':>12} {'imports MB':>11}"
    )

    def __init__(self) -> None:
        self.lines = [self.HEADER, "-" * len(self.HEADER)]

    def add(
        self,
        label: str,
        rows: int,
        seconds: float,
        rss_mb: float | None = None,
        import_mb: float | None = None,
    ) -> None:
        """One phase line; RSS columns left blank when not measured on their own."""
        rss = f"{rss_mb:12.1f}" if rss_mb is not None else " " * 12
        imports = f"{import_mb:11.1f}" if import_mb is not None else " " * 11
        self.lines.append(
            f"{label:<46} {rows:>10,} {seconds:>8.2f} {rate(rows, seconds):>10,.0f} "
            f"{rss} {imports}".rstrip()
        )


def target_line(label: str, value: str, ok: bool) -> str:
    """One line of the targets block."""
    return f"  {label:<44} {value:>16}  {verdict(ok)}"


def report(args: argparse.Namespace, data: Result, results: dict[str, Result], env: Result) -> str:
    """The human table: one line per phase, the comparisons, checks and the targets."""
    n = data["rows"]
    out = [
        f"NYC TLC green {YEAR}-{MONTH:02d} benchmark: {data['source_rows']:,} real rows x "
        f"{args.rows_factor} = {n:,} rows, {data['columns']} columns; "
        f"CSV {data['csv_mb']:.0f} MB, csv.gz {data['gz_mb']:.1f} MB (built in "
        f"{data['seconds']:.1f} s)",
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {env['versions']}",
        f"PostgreSQL {env['pg_version']} on 127.0.0.1 (testsupport.postgres, fsync=off), "
        f"started in {env['pg_start_seconds']:.1f} s, postmaster peak RSS "
        + (f"{env['pg_rss_mb']:.0f} MB" if env["pg_rss_mb"] is not None else "n/a")
        + " (not in any phase)",
        f"load average (1/5/15 min) before {env['load_before']}, after {env['load_after']}"
        " (other work on the machine makes the seconds noisy)",
        f"parent peak RSS {env['parent_rss_mb']:.0f} MB: every child's ru_maxrss starts there "
        "(Linux keeps it over fork + exec)",
        "",
    ]
    table = Table()
    ours_pq = results["ours-csv-parquet"]
    ours_pg = results["ours-csv-postgres"]
    table.add("ours  csv.gz -> raw zone (copy)", ours_pq["rows"], ours_pq["stage_seconds"])
    table.add("ours  raw -> data files (stage)", ours_pq["rows"], ours_pq["convert_seconds"])
    table.add("ours  Iceberg commits (table, rejects)", ours_pq["rows"], ours_pq["commit_seconds"])
    table.add(
        "ours  CSV -> Iceberg (one process)",
        ours_pq["rows"],
        ours_pq["seconds"],
        ours_pq["peak_rss_mb"],
        ours_pq["import_rss_mb"],
    )
    pandas_pq = results.get("pandas-csv-parquet")
    if pandas_pq:
        table.add(
            "pandas read_csv (peak so far)",
            pandas_pq["rows"],
            pandas_pq["read_seconds"],
            pandas_pq["read_peak_rss_mb"],
        )
        table.add("pandas to_parquet", pandas_pq["rows"], pandas_pq["write_seconds"])
        table.add(
            "pandas CSV -> Parquet (one process)",
            pandas_pq["rows"],
            pandas_pq["seconds"],
            pandas_pq["peak_rss_mb"],
            pandas_pq["import_rss_mb"],
        )
    table.add(
        "ours  streamed: stage done (peak so far)",
        ours_pg["rows"],
        ours_pg["convert_seconds"],
        ours_pg["convert_peak_rss_mb"],
    )
    table.add("ours  streamed: COPY done", ours_pg["rows_loaded"], ours_pg["copy_seconds"])
    table.add("ours  streamed: PG committed", ours_pg["rows_loaded"], ours_pg["postgres_seconds"])
    table.add(
        "ours  CSV -> PG + Iceberg streamed (one process)",
        ours_pg["rows"],
        ours_pg["seconds"],
        ours_pg["peak_rss_mb"],
        ours_pg["import_rss_mb"],
    )
    before = results.get("before-csv-postgres")
    if before:
        table.add("before streamed: convert done", before["rows"], before["convert_seconds"])
        table.add("before streamed: COPY done", before["rows_loaded"], before["copy_seconds"])
        table.add(
            "before streamed: PG committed", before["rows_loaded"], before["postgres_seconds"]
        )
        table.add(
            "before CSV -> PG + Iceberg (one process)",
            before["rows"],
            before["seconds"],
            before["peak_rss_mb"],
            before["import_rss_mb"],
        )
    two_step = results["ours-two-step-postgres"]
    table.add(
        "ours  2 steps: CSV -> Iceberg (peak so far)",
        two_step["rows"],
        two_step["convert_seconds"],
        two_step["convert_peak_rss_mb"],
    )
    table.add(
        "ours  2 steps: data files -> PG (replace)",
        two_step["rows_loaded"],
        two_step["load_seconds"],
    )
    table.add(
        "ours  CSV -> Iceberg, then PG (one process)",
        two_step["rows"],
        two_step["seconds"],
        two_step["peak_rss_mb"],
        two_step["import_rss_mb"],
    )
    course = results.get("course-to-sql")
    if course:
        table.add(
            "course read_csv chunks + to_sql (first rows)",
            course["rows"],
            course["seconds"],
            course["peak_rss_mb"],
            course["import_rss_mb"],
        )
        extrapolated = n / rate(course["rows"], course["seconds"])
        table.add("course to_sql, whole month (EXTRAPOLATED)", n, extrapolated)
    floor = results["psql-copy"]
    table.add(
        "floor psql \\copy plain CSV (psql's RSS)",
        floor["rows"],
        floor["seconds"],
        floor["psql_peak_rss_mb"],
    )
    out += table.lines

    ours_pg_rate = rate(ours_pg["rows"], ours_pg["seconds"])
    out += ["", "comparisons (rows/s over the rows each side read)"]
    comparisons: list[tuple[str, str, str]] = []
    if course:
        comparisons.append(
            (
                "ours CSV -> PG vs to_sql",
                f"speed-up {ratio(ours_pg_rate, rate(course['rows'], course['seconds']))}",
                f"(target >= {TO_SQL_SPEEDUP_TARGET:g}x)",
            )
        )
    comparisons.append(
        (
            "ours CSV -> PG vs psql \\copy",
            f"seconds  {ratio(ours_pg['postgres_seconds'], floor['seconds'])}",
            f"(ours to PG's commit / copy, target <= {COPY_RATIO_TARGET:g}x)",
        )
    )
    if before:
        comparisons += [
            (
                "before CSV -> PG vs psql \\copy",
                f"seconds  {ratio(before['postgres_seconds'], floor['seconds'])}",
                "(before, to PG's commit / copy)",
            ),
            (
                "ours vs before, PG + Iceberg",
                f"seconds  {ratio(ours_pg['seconds'], before['seconds'])}",
                "(ours / before, both commits; target <= 1x)",
            ),
            (
                "ours vs before, PG + Iceberg",
                f"CPU s    {ratio(ours_pg['cpu_seconds'], before['cpu_seconds'])}",
                f"(ours {ours_pg['cpu_seconds']:.1f} / before {before['cpu_seconds']:.1f} CPU s"
                " of the client process)",
            ),
        ]
        if len(before["all_seconds"]) > 1:
            comparisons.append(
                (
                    f"every run ({len(before['all_seconds'])} each)",
                    "ours " + ", ".join(f"{x:.2f}" for x in ours_pg["all_seconds"]),
                    "before " + ", ".join(f"{x:.2f}" for x in before["all_seconds"]) + " s",
                )
            )
    comparisons.append(
        (
            "ours CSV -> PG streamed vs 2 steps",
            f"speed-up {ratio(two_step['seconds'], ours_pg['seconds'])}",
            "(Iceberg then PG s / streamed s)",
        )
    )
    if pandas_pq:
        comparisons += [
            (
                "ours CSV -> Parquet vs pandas",
                f"speed-up {ratio(pandas_pq['seconds'], ours_pq['seconds'])}",
                f"(target >= {PANDAS_SPEEDUP_TARGET:g}x)",
            ),
            (
                "ours CSV -> Parquet vs pandas",
                f"RSS      {ratio(ours_pq['peak_rss_mb'], pandas_pq['peak_rss_mb'])}",
                f"(ours / pandas, target <= {PANDAS_RSS_RATIO_TARGET:g}x)",
            ),
        ]
    out += [f"  {label:<34} {value}  {note}" for label, value, note in comparisons]
    out += [
        "  ours CSV -> PG includes gunzip, typing, the data-quality rules, valid + rejects",
        "  Iceberg data files in the lake and a transactional replace of the month (and of its",
        "  rejects); \\copy only copies text (no gunzip, no rules, no rejects, no lake).",
    ]

    rules = ", ".join(f"{k} {v:,}" for k, v in ours_pq["rejected_by_rule"].items() if v)
    out += [
        "",
        "checks",
        f"  ours stage: {ours_pq['rows']:,} read, {ours_pq['rows_valid']:,} valid, "
        f"{ours_pq['rows_rejected']:,} rejected ({rules or 'none'}); "
        f"Parquet {ours_pq['parquet_mb']:.1f} MB",
        f"  ours PG table {OURS_TABLE}: {ours_pg['table_rows']:,} rows (the COPY loaded "
        f"{ours_pg['rows_loaded']:,}): "
        + ("equals" if ours_pg["table_rows"] == ours_pg["rows_valid"] else "DIFFERS FROM")
        + " the valid rows; "
        + f"{OURS_REJECTS_TABLE}: {ours_pg['rejects_rows']:,} rows: "
        + ("equals" if ours_pg["rejects_rows"] == ours_pg["rows_rejected"] else "DIFFERS FROM")
        + " the rejected rows",
        "  ours streamed: Iceberg data files "
        f"{ours_pg['parquet_rows'][0]:,} valid + {ours_pg['parquet_rows'][1]:,} rejects rows: "
        + (
            "equals"
            if ours_pg["parquet_rows"] == [ours_pg["rows_valid"], ours_pg["rows_rejected"]]
            else "DIFFERS FROM"
        )
        + f" the stage's counts; Iceberg table {ours_pg['iceberg_rows']:,} rows",
        f"  ours 2 steps table {TWO_STEP_TABLE}: {two_step['table_rows']:,} rows: "
        + ("equals" if two_step["table_rows"] == ours_pg["table_rows"] else "DIFFERS FROM")
        + " the streamed table's",
        f"  floor table {COPY_TABLE}: {floor['table_rows']:,} rows: "
        + ("equals" if floor["table_rows"] == n else "DIFFERS FROM")
        + " the CSV's rows",
    ]
    if course:
        out.append(
            f"  course table {COURSE_TABLE}: {course['table_rows']:,} rows: "
            + ("equals" if course["table_rows"] == course["rows"] else "DIFFERS FROM")
            + f" the {course['rows']:,} rows read"
        )
        ours_types = dict(sql_columns())
        drift = [
            f"{name} {kind}"
            for name, kind in course["column_types"].items()
            if name in ours_types and kind != ours_types[name]
        ]
        out.append(
            "  course table column types unlike ours: "
            + (", ".join(drift) if drift else "none")
            + (" (+ an 'index' column)" if "index" in course["column_types"] else "")
        )
    if pandas_pq:
        out.append(
            "  pandas inferred non-integer types for declared integer columns: "
            + (
                ", ".join(f"{c} {pandas_pq['dtypes'][c]}" for c in pandas_pq["int_columns_not_int"])
                or "none"
            )
            + "; warnings: "
            + (", ".join(pandas_pq["warnings"]) or "none")
        )

    ours_peak = max(ours_pq["peak_rss_mb"], ours_pg["peak_rss_mb"], two_step["peak_rss_mb"])
    out += ["", "targets"]
    if course:
        speed_up = ours_pg_rate / rate(course["rows"], course["seconds"])
        out.append(
            target_line(
                f"ours CSV -> PG >= {TO_SQL_SPEEDUP_TARGET:g}x to_sql's rows/s",
                f"{speed_up:.1f}x",
                speed_up >= TO_SQL_SPEEDUP_TARGET,
            )
        )
    copy_ratio = ours_pg["postgres_seconds"] / floor["seconds"]
    out.append(
        target_line(
            f"ours CSV -> PG <= {COPY_RATIO_TARGET:g}x \\copy's seconds",
            f"{copy_ratio:.2f}x",
            copy_ratio <= COPY_RATIO_TARGET,
        )
    )
    if pandas_pq:
        pq_speed_up = pandas_pq["seconds"] / ours_pq["seconds"]
        rss_ratio = ours_pq["peak_rss_mb"] / pandas_pq["peak_rss_mb"]
        out += [
            target_line(
                f"ours CSV -> Parquet >= {PANDAS_SPEEDUP_TARGET:g}x faster than pandas",
                f"{pq_speed_up:.1f}x",
                pq_speed_up >= PANDAS_SPEEDUP_TARGET,
            ),
            target_line(
                f"ours CSV -> Parquet RSS <= {PANDAS_RSS_RATIO_TARGET:g}x pandas'",
                f"{rss_ratio:.2f}x",
                rss_ratio <= PANDAS_RSS_RATIO_TARGET,
            ),
        ]
    out.append(
        target_line(
            f"ours peak RSS < {RSS_TARGET_MB:.0f} MB (max of our phases)",
            f"{ours_peak:.1f} MB",
            ours_peak < RSS_TARGET_MB,
        )
    )
    return "\n".join(out)


def versions() -> str:
    """Versions of the libraries measured (read from package metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("pyarrow", "pandas", "SQLAlchemy", "psycopg"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} -")
    return ", ".join(parts)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, and the CPU pressure (PSI) where Linux has it."""
    text = "/".join(f"{value:.2f}" for value in os.getloadavg())
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return text
    pressure = dict(item.split("=", 1) for item in some[1:] if "=" in item)
    return f"{text} (CPU pressure avg10 {pressure.get('avg10', '?')}%)"


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; ``--phase`` and ``--data-dir`` are internal (the parent passes them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rows-factor", type=int, default=16, help="copies of the real month (95,120 rows each)"
    )
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=200_000,
        help="rows the course's to_sql loads (it is slow; the month is extrapolated)",
    )
    parser.add_argument(
        "--skip-baseline", action="store_true", help="skip pandas and to_sql (keep the floor)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of ours vs before into PostgreSQL, alternating which goes first; the run "
        "with the median seconds is reported, every run's seconds listed",
    )
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows_factor < 1 or args.baseline_rows < 1:
        parser.error("--rows-factor and --baseline-rows must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parent: build the month, start PostgreSQL, run every phase in its own process, report."""
    args = parse_args(argv)
    if args.phase:
        run_phase(args.phase, args)
        return 0

    from testsupport.postgres import PostgresServer, find_binaries

    env: Result = {"load_before": load_average(), "versions": versions()}
    workdir = Path(tempfile.mkdtemp(prefix="tlc-bench-"))
    server: PostgresServer | None = None
    try:
        data_dir = workdir / "data"
        data_dir.mkdir()
        print(f"building the month: {SOURCE.name} x {args.rows_factor} ...", file=sys.stderr)
        data = run_child("build-month", args, data_dir, child_env(workdir / "build", None))
        began = time.perf_counter()
        server = PostgresServer().start()
        env["pg_start_seconds"] = time.perf_counter() - began
        env["pg_version"] = (server.data_dir / "PG_VERSION").read_text().strip()
        print(f"  PostgreSQL up in {env['pg_start_seconds']:.1f} s", file=sys.stderr)
        runs: dict[str, list[Result]] = {}
        order = list(PHASE_ORDER)
        for k in range(1, max(1, args.repeat)):  # more runs of the pair, alternating
            pair = [*REPEATED] if k % 2 == 0 else [*reversed(REPEATED)]
            order += [f"{name}#{k}" for name in pair]
        for entry in order:
            name = entry.split("#")[0]
            if args.skip_baseline and name in PANDAS_PHASES:
                continue
            if name in PG_PHASES:
                settle(find_binaries().psql, server.url, server.admin_url)
            url = server.url if name in PG_PHASES else None
            child = child_env(workdir / entry.replace("#", "-"), url)
            if name in BEFORE_PHASES:
                child["PYTHONPATH"] = str(unpack_before(workdir))
            runs.setdefault(name, []).append(run_child(name, args, data_dir, child))
        results = {name: median_run(done) for name, done in runs.items()}
        env["pg_rss_mb"] = server_peak_rss_mb(server.data_dir)
        env["load_after"] = load_average()
        env["parent_rss_mb"] = peak_rss_mb()
        print()
        print(report(args, data, results, env))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
