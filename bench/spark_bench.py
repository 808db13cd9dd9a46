"""The stage step on the Arrow engine vs Spark (local[1], local[2], a standalone cluster).

A synthetic taxi-like CSV dataset (12 monthly files, the table partitioned by month) is written
once into a temp lake; each engine then stages every size in its own child process (so peak RSS
is that engine's): seconds, rows/s and driver peak RSS per size, plus for Spark the session
start-up and the per-job overhead (a one-file job on a warm session). Nothing is committed: the
stage step is what the engines differ in. Prints a table; asserts nothing.

    .venv/bin/python bench/spark_bench.py --sizes 100000,1000000 [--cluster]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

SCHEMA = pa.schema(
    [
        ("pickup_datetime", pa.timestamp("us")),
        ("dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", pa.int32()),
        ("trip_distance", pa.float64()),
        ("fare_amount", pa.decimal128(10, 2)),
        ("total_amount", pa.decimal128(10, 2)),
        ("zone", pa.int32()),
        ("load_run_id", pa.string()),
    ]
)
REJECTS = pa.schema([("reason", pa.string()), ("raw_record", pa.string())])
RAW = ["pickup", "dropoff", "passengers", "distance", "fare", "total", "zone"]


class TripsSpec:
    """A TLC-like spec: strings in, typed columns out, negative fares rejected."""

    table = "bench.trips"
    rejects_table = "bench.trips_rejects"

    def arrow_schema(self) -> pa.Schema:
        return SCHEMA

    def rejects_schema(self) -> pa.Schema:
        return REJECTS

    def read(self, lake: Any, url: str) -> Iterator[pa.RecordBatch]:
        with lake.open(url) as handle:
            yield from pcsv.open_csv(
                handle,
                read_options=pcsv.ReadOptions(block_size=4 << 20),
                convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(RAW, pa.string())),
            )

    def transform(self, batch: pa.RecordBatch, ctx: Any) -> pa.RecordBatch:
        from civiclake.pipeline import output_schema

        col = batch.column
        fare = pc.cast(col("fare"), pa.decimal128(10, 2))
        reason = pc.if_else(
            pc.less(fare, pa.scalar(0, pa.decimal128(10, 2))),
            pa.scalar("negative fare"),
            pa.scalar(None, pa.string()),
        )
        raw = pc.binary_join_element_wise(*[col(name) for name in RAW], ",")
        arrays = [
            pc.strptime(col("pickup"), "%Y-%m-%d %H:%M:%S", "us"),
            pc.strptime(col("dropoff"), "%Y-%m-%d %H:%M:%S", "us"),
            pc.cast(col("passengers"), pa.int32()),
            pc.cast(col("distance"), pa.float64()),
            fare,
            pc.cast(col("total"), pa.decimal128(10, 2)),
            pc.cast(col("zone"), pa.int32()),
            pa.repeat(pa.scalar(ctx.run_id), batch.num_rows),
            reason,
            raw,
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=output_schema(self))

    def rejects(self, rejected: pa.Table, ctx: Any) -> pa.Table:
        return pa.table(
            {
                "reason": rejected.column("_reject_reason"),
                "raw_record": rejected.column("_raw_record"),
            },
            schema=REJECTS,
        )

    def observe(self, rows: pa.Table) -> dict[str, set[Any]]:
        return {}


def write_month(path: Path, month: int, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    start = np.datetime64(f"2024-{month:02d}-01T00:00:00")
    seconds = rng.integers(0, 27 * 86400, rows).astype("timedelta64[s]")
    pickup = start + seconds
    dropoff = pickup + rng.integers(60, 3600, rows).astype("timedelta64[s]")
    fare = np.round(rng.normal(15, 8, rows), 2)
    table = pa.table(
        {
            "pickup": pc.strftime(pa.array(pickup), "%Y-%m-%d %H:%M:%S"),
            "dropoff": pc.strftime(pa.array(dropoff), "%Y-%m-%d %H:%M:%S"),
            "passengers": pa.array(rng.integers(1, 6, rows)),
            "distance": pa.array(np.round(rng.exponential(3, rows), 2)),
            "fare": pa.array(fare).cast(pa.string()),
            "total": pa.array(np.round(fare * 1.2 + 2, 2)).cast(pa.string()),
            "zone": pa.array(rng.integers(1, 264, rows)),
        }
    )
    pcsv.write_csv(table, path)


def dataset(home: Path, rows: int) -> list[str]:
    """12 monthly CSV files of ``rows`` rows in total, under the lake's raw zone."""
    folder = home / "lake" / "raw" / "bench" / str(rows)
    folder.mkdir(parents=True, exist_ok=True)
    urls = []
    for month in range(1, 13):
        path = folder / f"{month:02d}.csv"
        if not path.exists():
            write_month(path, month, rows // 12, seed=month)
        urls.append(f"file://{path}")
    return urls


def phase(engine: str, master: str, sizes: list[int]) -> dict[str, Any]:
    """One engine over every size, in this (child) process."""
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.pipeline import RunContext
    from civiclake.pipeline.engines import get_stage, spark

    settings = get_settings()
    lake = settings.lake()
    catalog = tables.load_catalog(settings)
    table = tables.ensure_table_for(catalog, TripsSpec.table, SCHEMA, month_of="pickup_datetime")
    rejects = tables.ensure_table_for(catalog, TripsSpec.rejects_table, REJECTS)
    ctx = RunContext(run_id="bench", source="bench", now=datetime.now(UTC))
    home = Path(os.environ["CIVICLAKE_HOME"])
    out: dict[str, Any] = {"engine": engine if engine == "arrow" else f"spark {master}"}
    stage = get_stage(engine)
    if engine == "spark":
        began = time.monotonic()
        spark.spark_session(settings)
        out["session_s"] = round(time.monotonic() - began, 2)
        tiny = dataset(home, 1200)[:1]
        jobs = []
        for _ in range(3):
            began = time.monotonic()
            stage(TripsSpec(), lake, tiny, ctx, table=table, rejects_table=rejects)
            jobs.append(round(time.monotonic() - began, 2))
        out["first_job_s"], out["job_overhead_s"] = jobs[0], min(jobs[1:])
    for rows in sizes:
        urls = dataset(home, rows)
        began = time.monotonic()
        staged = stage(TripsSpec(), lake, urls, ctx, table=table, rejects_table=rejects)
        seconds = time.monotonic() - began
        out[str(rows)] = {
            "seconds": round(seconds, 2),
            "rows_per_s": int(staged.rows_read / seconds),
            "rows": staged.rows_read,
            "files": len(staged.data.files),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        }
        if engine == "spark":  # the driver's JVM and its local Python workers, now
            out[str(rows)]["children_rss_mb"] = _children_rss_mb()
    return out


def _children_rss_mb() -> int:
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total >> 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--masters", default="local[1],local[2]")
    parser.add_argument("--cluster", action="store_true", help="also a 1-worker standalone cluster")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.phase:
        print(json.dumps(phase(args.phase, args.master or "", sizes)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="civiclake-spark-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICLAKE_")}
        env["CIVICLAKE_HOME"] = tmp
        env["CIVICLAKE_SPARK_CONF"] = json.dumps({"spark.driver.memory": "1g"})
        began = time.monotonic()
        for rows in [1200, *sizes]:
            dataset(Path(tmp), rows)
        print(f"data written in {time.monotonic() - began:.1f} s", flush=True)
        runs = [("arrow", "")] + [("spark", m) for m in args.masters.split(",")]
        cluster = None
        if args.cluster:
            from testsupport.spark import SparkCluster

            cluster = SparkCluster(cores=2, memory="1g").__enter__()
            runs.append(("spark", cluster.master))
        try:
            for engine, master in runs:
                child_env = dict(env, CIVICLAKE_SPARK_MASTER=master or "local[1]")
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--phase",
                        engine,
                        "--master",
                        master,
                        "--sizes",
                        args.sizes,
                    ],
                    env=child_env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode or not lines:
                    print(f"{engine} {master}: failed\n{done.stderr[-2000:]}")
                    continue
                print(lines[-1], flush=True)
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)


if __name__ == "__main__":
    main()
