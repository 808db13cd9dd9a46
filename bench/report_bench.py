"""Benchmark ``civiclake report`` on big tables: a 2.5-million-row B&T table (14+ years of the
replay server's synthetic hours) and a 1.5-million-row TLC month (the real green 2020-10 month
repeated 16 times, as ``bench/tlc_bench.py`` builds it).

Building the tables is not measured. Each report (one page: every chart's SQL + SVG rendering +
the HTML file) runs in a fresh child process (this script with ``--phase``), so its peak RSS is
its own. Figures are printed, never asserted. Target (issue 13): a few seconds and under 500 MB.

    .venv/bin/python bench/report_bench.py [--bnt-rows N] [--tlc-factor N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BNT_ROWS = 2_500_000
TLC_FACTOR = 16  # x 95,120 rows of the real month = 1.52 M
ROWS_PER_DAY = 10 * 2 * 24  # plazas x directions x hours (civiclake.testing.socrata.bnt_rows)
BUILD_DAYS = 120  # days generated and normalised per chunk: bounded memory while building
FIRST_DAY = date(2010, 1, 1)
RSS_TARGET_MB = 500.0
PHASE_TIMEOUT = 3600.0
ZONES = Path("/work/shared/data/tlc/taxi_zone_lookup.csv")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bnt_chunks(rows: int, run_id: str) -> Any:
    from civiclake.pipeline import split
    from civiclake.sources import bnt
    from civiclake.testing.socrata import bnt_rows

    days = -(-rows // ROWS_PER_DAY)
    stop = FIRST_DAY + timedelta(days=days)
    ctx = bnt.context(run_id, "bench", datetime.now(UTC), bnt.LoadRange(FIRST_DAY, stop))
    for offset in range(0, days, BUILD_DAYS):
        n = min(BUILD_DAYS, days - offset)
        batch = bnt.records_batch(bnt_rows(FIRST_DAY + timedelta(days=offset), n))
        yield split(bnt.SPEC, bnt.SPEC.transform(batch, ctx), ctx)[0]


def phase_build(args: argparse.Namespace) -> dict[str, Any]:
    """Not measured: both tables (and tlc.taxi_zones) into this home's lake."""
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.sources import bnt, tlc, tlc_fetch, tlc_zones

    began = time.perf_counter()
    settings = get_settings()
    catalog = tables.load_catalog(settings)
    lake = settings.lake()
    table = tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)
    days = -(-args.bnt_rows // ROWS_PER_DAY)
    the_range = bnt.LoadRange(FIRST_DAY, FIRST_DAY + timedelta(days=days))
    props = {"run-id": "bench", "source": "bench", "range": str(the_range)}
    bnt_result = tables.replace_range(
        table, the_range.table_filter(), lambda: _bnt_chunks(args.bnt_rows, "bench"), props
    )

    sys.path.insert(0, str(BENCH))
    import tlc_bench

    data = Path(args.work) / "tlc-data"
    data.mkdir(parents=True, exist_ok=True)
    tlc_bench.build_month(args.tlc_factor, data)
    month = tlc_bench.month()
    raw_url = tlc_fetch.stage_local_file(lake, str(data / tlc_bench.GZ_NAME), "green", month)
    trips = tables.ensure_table_for(
        catalog, tlc.GREEN.table, tlc.table_schema(tlc.GREEN), month_of=tlc.GREEN.pickup
    )
    rejects = tables.ensure_table_for(
        catalog, tlc.GREEN.rejects_table, tlc.rejects_schema(tlc.GREEN)
    )
    from datetime import UTC, datetime

    from civiclake.pipeline.commit import Load, commit
    from civiclake.pipeline.engines import get_stage
    from civiclake.slices import WholeTable

    ctx = tlc.context(tlc.GREEN, month, run_id="bench", now=datetime.now(UTC))
    staged = get_stage()(tlc.GREEN, lake, [raw_url], ctx, table=trips, rejects_table=rejects)
    tlc_props = {"run-id": "bench", "source": "bench", "range": str(month)}
    tlc_result = commit(lake, trips, rejects, Load(staged, WholeTable(), WholeTable(), tlc_props))
    tlc_zones.load(catalog, tlc_zones.parse(ZONES.read_bytes()), "bench", "bench")
    shutil.rmtree(data)
    return {
        "bnt_rows": bnt_result.total_rows,
        "tlc_rows": tlc_result.total_rows,
        "seconds": time.perf_counter() - began,
    }


def phase_report(args: argparse.Namespace) -> dict[str, Any]:
    """One table's page: SQL aggregates, SVG charts, the HTML file."""
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.report import charts, write_reports

    import_rss = peak_rss_mb()
    render_seconds = 0.0
    original = charts.render

    def timed(chart: Any) -> str:
        nonlocal render_seconds
        t = time.perf_counter()
        try:
            return original(chart)
        finally:
            render_seconds += time.perf_counter() - t

    charts.render = timed  # type: ignore[assignment]
    settings = get_settings()
    began = time.perf_counter()
    _, (page,) = write_reports(
        settings, tables.load_catalog(settings), [args.table], Path(args.work) / "out"
    )
    seconds = time.perf_counter() - began
    return {
        "table": args.table,
        "rows": page.rows,
        "charts": sum(1 for c in page.charts.values() if c.svg),
        "seconds": seconds,
        "render_seconds": render_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "import_rss_mb": import_rss,
        "html_kb": (Path(args.work) / "out" / page.file_name).stat().st_size / 1024,
    }


PHASES = {"build": phase_build, "report": phase_report}


def run_child(phase: str, args: argparse.Namespace, env: dict[str, str], *extra: str) -> Any:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--work",
        args.work,
        "--bnt-rows",
        str(args.bnt_rows),
        "--tlc-factor",
        str(args.tlc_factor),
        *extra,
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=PHASE_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bnt-rows", type=int, default=BNT_ROWS)
    parser.add_argument("--tlc-factor", type=int, default=TLC_FACTOR)
    parser.add_argument("--keep", help="build the tables in DIR and keep them")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return 0
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="report-bench-"))
    args.work = str(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICLAKE_")}
    env["CIVICLAKE_HOME"] = str(work / "home")
    try:
        built = run_child("build", args, env)
        print(
            f"built: mta.bnt_traffic_hourly {built['bnt_rows']:,} rows, tlc.green_trips "
            f"{built['tlc_rows']:,} rows in {built['seconds']:.0f} s (not measured)"
        )
        print(f"{'table':<24}{'rows':>12}{'charts':>8}{'seconds':>9}{'svg s':>7}{'peak MB':>9}")
        for table in ("mta.bnt_traffic_hourly", "tlc.green_trips"):
            r = run_child("report", args, env, "--table", table)
            ok = r["peak_rss_mb"] < RSS_TARGET_MB
            print(
                f"{r['table']:<24}{r['rows']:>12,}{r['charts']:>8}{r['seconds']:>9.2f}"
                f"{r['render_seconds']:>7.2f}{r['peak_rss_mb']:>9.0f}"
                f"  (imports {r['import_rss_mb']:.0f} MB, page {r['html_kb']:.0f} kB, "
                f"RSS target < {RSS_TARGET_MB:.0f} MB: {'met' if ok else 'MISSED'})"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
