"""The whole ``civiclake bnt run`` command against its floor, in the same run (issue 19).

Floor: a bare httpx client fetching the same pages (``count(*)``, then ``$limit``/``$offset``
pages ordered by ``:id``) and discarding them. Then each civiclake given with ``--civiclake
NAME=BIN`` (e.g. the main checkout's and a branch's, to compare before/after) runs ``bnt run``
for the same range, alternating, each run in a fresh ``CIVICLAKE_HOME``:

- ``server``: with ``PREFECT_API_URL`` set to a Prefect server this bench starts;
- ``default``: no ``PREFECT_API_URL``, ``PREFECT_HOME`` kept between runs of one civiclake,
  after one unmeasured run. With a civiclake that starts ``civiclake server`` itself, each run's
  fresh ``CIVICLAKE_HOME`` means a server start in every run (stopped after it): a first-run
  figure, not "every run after the first" (``server_bench.py`` measures that).

Medians of ``--repeat`` runs are printed, never asserted. ``--latency 0.44`` plays the real
portal (the issue's floor, 2.19 s for the count and four pages of data.ny.gov, is 0.44 s an
answer); without it the floor is a local server's, well under a second.

    .venv/bin/python bench/bnt_command_bench.py [--rows 175200] [--repeat 3] \\
        [--civiclake before=/work/main/.venv/bin/civiclake] [--civiclake after=.venv/bin/civiclake]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bnt_bench import (
    DATASET_ID,
    child_env,
    date_range,
    start_server,
    stop_server,
    warm_up,
)


def floor_seconds(url: str, rows: int, page_size: int) -> float:
    """A bare httpx fetch of the pages the command fetches (count, then every page)."""
    import httpx

    from civiclake.sources.socrata import date_range_where

    where = date_range_where("date", *date_range(rows))
    began = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client:
        resource = f"/resource/{DATASET_ID}.json"
        client.get(resource, params={"$select": "count(*)", "$where": where}).raise_for_status()
        offset = 0
        while True:
            page = client.get(
                resource,
                params={
                    "$where": where,
                    "$order": ":id",
                    "$limit": str(page_size),
                    "$offset": str(offset),
                },
            )
            page.raise_for_status()
            got = len(page.json())
            offset += got
            if got < page_size:
                break
    return time.perf_counter() - began


def command_seconds(
    binary: str, url: str, rows: int, page_size: int, extra_env: dict[str, str]
) -> float:
    """One ``bnt run`` of the range, in a fresh home; its wall time."""
    start, stop = date_range(rows)
    home = Path(tempfile.mkdtemp(prefix="bnt-command-"))
    try:
        env = {**child_env(home, url), "CIVICLAKE_PAGE_SIZE": str(page_size), **extra_env}
        began = time.perf_counter()
        done = subprocess.run(
            [binary, "bnt", "run", "--start-date", str(start), "--stop-date", str(stop)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(f"{binary} bnt run failed: {done.stderr[-2000:]}")
        return seconds
    finally:
        if (home / "server").exists():  # a civiclake server the run started in this home
            subprocess.run(
                [binary, "server", "stop"], env=env, capture_output=True, timeout=120, check=False
            )
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=175_200, help="rows in the range (a year)")
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--civiclake", action="append", default=[], metavar="NAME=BIN")
    parser.add_argument("--skip-default", action="store_true", help="only with a server")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each answer of the replay server waits (0.44: data.ny.gov, measured)",
    )
    args = parser.parse_args(argv)
    binaries = dict(item.split("=", 1) for item in args.civiclake) or {
        "this": str(Path(sys.executable).with_name("civiclake"))
    }
    from testsupport.prefect_server import PrefectServer

    proc, url, _ = start_server(args.rows, args.latency)
    prefect_homes = {name: Path(tempfile.mkdtemp(prefix="bnt-prefect-")) for name in binaries}
    times: dict[str, list[float]] = {"floor": []}
    try:
        warm_up(url, args.rows)
        with PrefectServer() as prefect:
            server_env = {"PREFECT_API_URL": prefect.api_url}
            for name, binary in binaries.items():  # unmeasured: first runs (imports, caches)
                command_seconds(binary, url, args.rows, args.page_size, server_env)
                if not args.skip_default:
                    default_env = {"PREFECT_HOME": str(prefect_homes[name])}
                    command_seconds(binary, url, args.rows, args.page_size, default_env)
            for _ in range(args.repeat):
                times["floor"].append(floor_seconds(url, args.rows, args.page_size))
                for name, binary in binaries.items():
                    times.setdefault(f"{name} server", []).append(
                        command_seconds(binary, url, args.rows, args.page_size, server_env)
                    )
                    if not args.skip_default:
                        default_env = {"PREFECT_HOME": str(prefect_homes[name])}
                        times.setdefault(f"{name} default", []).append(
                            command_seconds(binary, url, args.rows, args.page_size, default_env)
                        )
    finally:
        stop_server(proc)
        for home in prefect_homes.values():
            shutil.rmtree(home, ignore_errors=True)
    floor = statistics.median(times["floor"])
    print(
        f"civiclake bnt run, {args.rows:,} rows, page size {args.page_size:,}, "
        f"latency {args.latency:.2f} s, {os.cpu_count()} cores, medians of {args.repeat}"
    )
    for label, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"  {label:<20} {median:6.2f} s  {median / floor:5.2f}x floor  "
            f"floor + {median - floor:5.2f} s  ({runs})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
