"""Benchmark table maintenance: B&T after N simulated daily incremental runs, before/after.

Runs N daily loads (default 40) against the in-process Socrata replay server, the current month
revised every day (``testsupport.bnt_daily``, the same non-Prefect functions the flow's
tasks call), into a temp local lake, then ``civiclake maintain --retain-days 0 --retain-last
10`` and ``--compact`` as the CLI runs them (``maintain_table`` over every table). Prints the
Iceberg warehouse's file count and bytes (and the whole lake's, raw and stage zones included,
which maintain does not touch) before and after, maintain's wall time, and a daily load's time
before and after maintain (PyIceberg copies the table metadata per update, so a load slows as
snapshots pile up). Figures are printed, never asserted.

    .venv/bin/python bench/maintain_bench.py [--days 40]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

FIRST_DAY = date(2024, 1, 10)


def _files(root: Path) -> tuple[int, int]:
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()]
    return len(sizes), sum(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=40, help="daily runs before maintain")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="civiclake-maintain-bench-"))
    for key in [k for k in os.environ if k.startswith("CIVICLAKE_")]:
        del os.environ[key]
    os.environ["CIVICLAKE_HOME"] = str(home)
    try:
        run(args.days, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(days: int, home: Path) -> None:
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.tables import maintenance
    from civiclake.testing.socrata import SocrataServer
    from testsupport import bnt_daily

    warehouse, lake = home / "lake" / "warehouse", home / "lake"
    with SocrataServer({}) as server:
        os.environ["CIVICLAKE_SOCRATA_URL"] = server.url
        settings = get_settings()
        load_s: list[float] = []
        for day in range(days):
            began = time.monotonic()
            bnt_daily.load_day(settings, server, FIRST_DAY, day)
            load_s.append(time.monotonic() - began)
        catalog = tables.load_catalog(settings)
        names = maintenance.resolve_tables(catalog, [])
        snapshots = {n: len(catalog.load_table(n).metadata.snapshots) for n in names}
        figures = [(f"after {days} daily runs", *_files(warehouse), *_files(lake), 0.0)]
        for label, options in [
            (
                "maintain --retain-days 0 --retain-last 10",
                maintenance.MaintainOptions(retain_days=0, retain_last=10),
            ),
            (
                "maintain --compact --retain-days 0 --retain-last 10",
                maintenance.MaintainOptions(retain_days=0, retain_last=10, compact=True),
            ),
        ]:
            began = time.monotonic()
            locations = maintenance.table_locations(catalog, names)
            for name in names:
                maintenance.maintain_table(
                    catalog, name, settings.lake(), options, other_locations=locations
                )
            seconds = time.monotonic() - began
            figures.append((label, *_files(warehouse), *_files(lake), seconds))
        began = time.monotonic()
        bnt_daily.load_day(settings, server, FIRST_DAY, days)
        after_load = time.monotonic() - began

    print(f"B&T: {days} simulated daily incremental runs (480 rows a day, 8-day ranges)")
    print(f"snapshots before maintain: {snapshots}")
    print(
        f"{'state':<52} {'warehouse files':>15} {'warehouse bytes':>16} "
        f"{'lake files':>11} {'lake bytes':>12} {'maintain s':>11}"
    )
    for label, wf, wb, lf, lb, seconds in figures:
        timing = f"{seconds:.2f}" if seconds else ""
        print(f"{label:<52} {wf:>15,} {wb:>16,} {lf:>11,} {lb:>12,} {timing:>11}")
    print(
        f"daily load: first {load_s[0]:.2f} s, run {days} {load_s[-1]:.2f} s "
        f"(mean {sum(load_s) / len(load_s):.2f} s); the next run after maintain {after_load:.2f} s"
    )


if __name__ == "__main__":
    main()
