"""Benchmark ``civiclake socrata run`` on a large every-type dataset against its fetch floor.

The replay server (``civiclake.testing.socrata --kind sample``) serves N rows of 14 typed
fields plus the system fields (text, numbers, money, checkboxes, timestamps with and without
zone, points, locations, polygons, URLs) in a process of its own. In the same run:

- floor: a bare HTTP loop (httpx, orjson) fetching the same pages (same ``$order``, ``$select``
  and page size) and only counting the rows: what any client must spend;
- ours: the whole ``civiclake socrata run`` command (a fresh table, a running Prefect server):
  metadata, count, pages into the raw zone, typed Parquet + rejects, one Iceberg commit.

Printed, never asserted. ``.venv/bin/python bench/socrata_bench.py [--rows N] [--page-size N]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

DATASET = "bnch-0001"
TARGET_RATIO = 1.5
RSS_TARGET_MB = 500.0
SERVER_TIMEOUT_S = 900.0


def start_replay(rows: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "civiclake.testing.socrata", "--kind", "sample"),
            *("--rows", str(rows), "--dataset", DATASET),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"replay server failed to start: {url!r}")
    return proc, url


def floor(url: str, page_size: int) -> tuple[int, float]:
    """The same pages, fetched and counted: nothing stored, nothing typed."""
    began = time.perf_counter()
    rows = offset = 0
    with httpx.Client(base_url=url, timeout=600) as client:
        client.get(f"/resource/{DATASET}.json", params={"$select": "count(*)"})
        while True:
            params = {
                "$order": ":id",
                "$limit": str(page_size),
                "$offset": str(offset),
                "$select": ":*, *",
            }
            page = orjson.loads(client.get(f"/resource/{DATASET}.json", params=params).content)
            rows += len(page)
            offset += len(page)
            if len(page) < page_size:
                return rows, time.perf_counter() - began


def ours(
    url: str, page_size: int, env: dict[str, str], src: str | None = None
) -> tuple[float, float, str]:
    """The whole command as a user runs it; wall seconds, its own peak RSS (MB), its summary.

    ``src``: run the civiclake package found there instead (``PYTHONPATH``), e.g. main's
    ``src`` unpacked by ``git archive``, for a before/after in the same run."""
    if src is not None:
        env = {**env, "PYTHONPATH": src}
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "civiclake.cli", "socrata", "run", DATASET),
                *("--page-size", str(page_size)),
            ],
            env={**env, "CIVICLAKE_SOCRATA_URL": url, "COLUMNS": "120"},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not all children's
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - began
        out.seek(0)
        printed = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"socrata run failed:\n{printed[-3000:]}")
    return wall, usage.ru_maxrss / 1024, printed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also run the civiclake package in SRC first (e.g. main's src from git archive), "
        "each in a fresh CIVICLAKE_HOME",
    )
    args = parser.parse_args(argv)

    from testsupport.prefect_server import PrefectServer

    print(f"replay server: {args.rows:,} rows of {DATASET} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    replay, url = start_replay(args.rows)
    print(f"  serving after {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="socrata-bench-") as home, PrefectServer() as pf:
            env = pf.env(
                {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("CIVICLAKE_") and k != "SOCRATA_APP_TOKEN"
                }
            )
            floor(url, args.page_size)  # warm: the server sorts by :id once and caches it
            counted, floor_s = floor(url, args.page_size)
            runs: list[tuple[str, float, float, str]] = []
            for label, src in [("before", args.before), ("ours", None)]:
                if label == "before" and src is None:
                    continue
                env["CIVICLAKE_HOME"] = str(Path(home) / label / "civiclake")
                runs.append((label, *ours(url, args.page_size, env, src)))
    finally:
        replay.terminate()
        replay.wait(timeout=30)
    print(runs[-1][3])
    print(f"rows                      {counted:>12,}")
    print(f"floor (fetch + count)     {floor_s:>10.2f} s   {counted / floor_s:>12,.0f} rows/s")
    for label, wall, peak, _ in runs:
        name = "civiclake socrata run" if label == "ours" else f"socrata run ({label})"
        ratio = wall / floor_s
        print(f"{name:<25} {wall:>10.2f} s   {counted / wall:>12,.0f} rows/s")
        print(
            f"  ratio to the floor      {ratio:>10.2f} x   target <= {TARGET_RATIO} x: "
            f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}"
        )
        print(
            f"  peak RSS (command)      {peak:>10.1f} MB  target < {RSS_TARGET_MB:.0f} MB: "
            f"{'met' if peak < RSS_TARGET_MB else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
