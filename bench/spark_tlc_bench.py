"""The real TLC green spec through the Arrow engine and Spark (``local[1]``, ``local[2]``, a
1-worker standalone cluster) in one run, and a warehouse load after each engine's stage.

Data: the real green 2020-10 month (95,120 rows), the 1.5M-row month ``bench/tlc_bench.py``
builds from it (16 copies, copy k shifted by k seconds) and a "year": ``--months`` copies of
that 1.5M-row month as separate raw files (hard links; the same rows per file as 12 real
months, all typed as October 2020: the work per row is the same, the partitions are not).

Stage (``--phase stage``, one child process per engine/master, so each peak RSS is that
run's): ``tlc.spec_for("green")`` staged by the engine from the raw zone of a temp lake
(nothing committed; the uncommitted data files are deleted after each size): seconds, rows/s,
the driver's peak RSS (Python, ``ru_maxrss``) and, for Spark, the peak of the driver's child
processes together (the driver JVM and, on ``local[N]``, the Python workers; a cluster's
executors are the worker's children, not counted), sampled every 0.2 s. For Spark also: the
session start-up, the first job (a 1,000-row file) and the per-job overhead (the same job on a
warm session).

Warehouse (``--warehouses duckdb,postgres``): ``civiclake taxi run --from-file <1.5M month>
--to W --engine E`` as a user runs it (a child process, a local Prefect server, a real
PostgreSQL from ``testsupport.postgres``): seconds, and the peak RSS of the driver process
(``VmHWM`` of the civiclake process, read every 0.2 s) and of its descendants (Spark's JVM and
workers). Figures are printed, never asserted.

    .venv/bin/python bench/spark_tlc_bench.py [--months 12] [--masters local[1],local[2]]
        [--cluster] [--warehouses duckdb,postgres] [--warehouse-sizes month,x16] [--skip-stage]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = Path("/work/shared/data/tlc/green_tripdata_2020-10.csv.gz")
NAME = "green_tripdata_2020-10.csv.gz"
FACTOR = 16
TINY_ROWS = 1000


# -- sampling ---------------------------------------------------------------------------------


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.Error):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


class Sampler:
    """Peak of ``pid``'s own high-water mark and of its descendants' summed RSS."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.own_kb = 0
        self.children_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.children_kb = 0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.own_kb = max(self.own_kb, _rss_kb(self.pid, "VmHWM"))
            total = sum(_rss_kb(child) for child in _descendants(self.pid))
            self.children_kb = max(self.children_kb, total)


# -- data -------------------------------------------------------------------------------------


def build(data: Path, months: int) -> dict[str, list[Path]]:
    """The real month, the 1.5M-row month (built by tlc_bench in a child), a tiny file and
    ``months`` links to the 1.5M-row month."""
    big = data / "x16"
    big.mkdir(parents=True, exist_ok=True)
    if not (big / NAME).exists():
        code = (
            "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "import tlc_bench; print(tlc_bench.build_month(int(sys.argv[2]), Path(sys.argv[3])))"
        )
        subprocess.run([sys.executable, "-c", code, str(HERE), str(FACTOR), str(big)], check=True)
        (big / NAME.removesuffix(".gz")).unlink()  # the plain CSV: not used here
    tiny = data / "tiny"
    tiny.mkdir(exist_ok=True)
    if not (tiny / NAME).exists():
        with gzip.open(SOURCE, "rt", newline="") as src, gzip.open(tiny / NAME, "wt") as dst:
            for i, line in enumerate(src):
                if i > TINY_ROWS:
                    break
                dst.write(line)
    year = []
    for month in range(1, months + 1):
        folder = data / "year" / f"{month:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / NAME).exists():
            os.link(big / NAME, folder / NAME)
        year.append(folder / NAME)
    return {"tiny": [tiny / NAME], "month": [SOURCE], "x16": [big / NAME], "year": year}


# -- the stage phase (a child) ----------------------------------------------------------------


def stage_phase(engine: str, files: dict[str, list[str]]) -> dict[str, Any]:
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.pipeline.engines import get_stage, spark
    from civiclake.sources import tlc

    settings = get_settings()
    lake = settings.lake()
    spec, month = tlc.spec_for("green"), tlc.Month(2020, 10)
    ctx = tlc.context(spec, month, run_id="bench", now=datetime.now(UTC))
    catalog = tables.load_catalog(settings)
    table = tables.ensure_table_for(
        catalog, spec.table, tlc.table_schema(spec), month_of=spec.pickup
    )
    rejects = tables.ensure_table_for(catalog, spec.rejects_table, tlc.rejects_schema(spec))
    raw: dict[str, list[str]] = {}  # each file under its own name in the raw zone (linked)
    for size, paths in files.items():
        raw[size] = []
        for i, path in enumerate(paths):
            linked = Path(os.environ["CIVICLAKE_HOME"], "lake", "raw", "bench", size, str(i), NAME)
            linked.parent.mkdir(parents=True, exist_ok=True)
            if not linked.exists():
                try:
                    os.link(path, linked)
                except OSError:  # another file system
                    shutil.copyfile(path, linked)
            raw[size].append(f"file://{linked}")
    stage = get_stage(engine)
    out: dict[str, Any] = {}

    def run(urls: list[str]) -> Any:
        staged = stage(spec, lake, urls, ctx, table=table, rejects_table=rejects)
        for data_file in (*staged.data.files, *staged.rejects.files):  # never committed
            with contextlib.suppress(OSError):
                os.unlink(data_file.file_path.removeprefix("file://"))
        return staged

    with Sampler(os.getpid()) as sampler:
        if engine == "spark":
            began = time.monotonic()
            spark.spark_session(settings)
            out["session_s"] = round(time.monotonic() - began, 2)
            jobs = []
            for _ in range(3):
                began = time.monotonic()
                run(raw["tiny"])
                jobs.append(round(time.monotonic() - began, 2))
            out["first_job_s"], out["job_overhead_s"] = jobs[0], min(jobs[1:])
        for size in ("month", "x16", "year"):
            sampler.reset()
            began = time.monotonic()
            staged = run(raw[size])
            seconds = time.monotonic() - began
            out[size] = {
                "files": len(raw[size]),
                "rows": staged.rows_read,
                "valid": staged.rows_valid,
                "seconds": round(seconds, 2),
                "rows_per_s": int(staged.rows_read / seconds),
                "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "children_peak_mb": sampler.children_kb // 1024,
            }
            print(json.dumps({"progress": size, **out[size]}), file=sys.stderr, flush=True)
    return out


# -- the parent -------------------------------------------------------------------------------


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICLAKE_")}
    env.update(
        CIVICLAKE_HOME=str(home),
        CIVICLAKE_SPARK_CONF=json.dumps({"spark.driver.memory": "1g"}),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        **extra,
    )
    return env


def run_stage(tmp: Path, engine: str, master: str, files: dict[str, list[Path]]) -> None:
    home = tmp / f"home-{engine}-{master.replace('/', '_').replace(':', '_')}"
    listed = json.dumps({k: [str(p) for p in v] for k, v in files.items()})
    done = subprocess.run(
        [sys.executable, __file__, "--phase", "stage", "--engine", engine, "--files", listed],
        env=child_env(home, CIVICLAKE_SPARK_MASTER=master or "local[1]"),
        capture_output=True,
        text=True,
        check=False,
    )
    label = engine if engine == "arrow" else f"spark {master}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(f"{label}: failed\n{done.stderr[-3000:]}", flush=True)
        return
    print(json.dumps({"run": label, **json.loads(lines[-1])}), flush=True)
    shutil.rmtree(home, ignore_errors=True)


def run_warehouse(tmp: Path, engine: str, to: str, month: Path, env_extra: dict[str, str]) -> None:
    home = tmp / f"wh-{engine}-{to}"
    env = child_env(home, CIVICLAKE_SPARK_MASTER="local[2]", **env_extra)
    args = [sys.executable, "-m", "civiclake.cli", "taxi", "run", "--from-file", str(month)]
    args += ["--to", to, "--engine", engine]
    began = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        with Sampler(process.pid) as sampler:
            code = process.wait()
        seconds = time.monotonic() - began
        log.seek(0)
        output = log.read()
    result = {
        "run": f"taxi run --to {to} --engine {engine}",
        "file": f"{month.parent.name}/{month.name}",
        "exit": code,
        "seconds": round(seconds, 1),
        "driver_peak_mb": sampler.own_kb // 1024,
        "children_peak_mb": sampler.children_kb // 1024,
    }
    if code:
        result["output"] = output[-2000:]
    print(json.dumps(result), flush=True)
    shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--months", type=int, default=12, help="copies of the 1.5M-row month")
    parser.add_argument("--masters", default="local[1],local[2]")
    parser.add_argument("--cluster", action="store_true", help="also a 1-worker standalone cluster")
    parser.add_argument("--warehouses", default="", help="e.g. duckdb,postgres")
    parser.add_argument(
        "--warehouse-sizes", default="x16", help="month (95,120 rows) and/or x16 (1.5M rows)"
    )
    parser.add_argument("--skip-stage", action="store_true")
    parser.add_argument("--engines", default="arrow,spark", help=argparse.SUPPRESS)
    parser.add_argument("--data", help="keep the built files here (default: a temp dir)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "stage":
        files = json.loads(args.files)
        print(json.dumps(stage_phase(args.engine, files)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="civiclake-spark-tlc-") as tmp_name:
        tmp = Path(tmp_name)
        data = Path(args.data) if args.data else tmp / "data"
        began = time.monotonic()
        files = build(data, args.months)
        print(f"data ready in {time.monotonic() - began:.1f} s: {args.months} month file(s)")
        print(f"load average: {os.getloadavg()}", flush=True)
        engines = args.engines.split(",")
        if not args.skip_stage:
            runs = [("arrow", "")] if "arrow" in engines else []
            if "spark" in engines:
                runs += [("spark", m) for m in args.masters.split(",") if m]
            cluster = None
            if args.cluster:
                sys.path.insert(0, str(HERE.parent))
                from testsupport.spark import SparkCluster

                cluster = SparkCluster(cores=2, memory="1g").__enter__()
                runs.append(("spark", cluster.master))
            try:
                for engine, master in runs:
                    run_stage(tmp, engine, master, files)
            finally:
                if cluster is not None:
                    cluster.__exit__(None, None, None)
        if args.warehouses:
            months = [files[size][0] for size in args.warehouse_sizes.split(",")]
            warehouse_runs(tmp, args.warehouses.split(","), engines, months)
        print(f"load average: {os.getloadavg()}", flush=True)


def warehouse_runs(tmp: Path, kinds: list[str], engines: list[str], months: list[Path]) -> None:
    sys.path.insert(0, str(HERE.parent))
    from testsupport.prefect_server import PrefectServer

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(PrefectServer())
        extra = {"PREFECT_API_URL": server.api_url}
        if "postgres" in kinds:
            from testsupport.postgres import PostgresServer

            postgres = stack.enter_context(PostgresServer())
            extra["CIVICLAKE_POSTGRES_URL"] = postgres.url
        for month in months:
            for to in kinds:
                for engine in engines:
                    run_warehouse(tmp, engine, to, month, extra)


if __name__ == "__main__":
    main()
