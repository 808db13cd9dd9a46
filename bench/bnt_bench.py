"""Benchmark the MTA B&T pipeline against the tutorial's way, in the same run.

Ours: ``flows.bnt.fetch_and_stage`` (API -> raw pages in the lake, each page typed into
Iceberg data files by the stage engine as soon as it is written), then ``flows.bnt.commit_load``
(the data files committed, table and rejects), called directly as the Prefect tasks call them
(Prefect itself is not started: its startup would dominate; ``bnt_command_bench.py`` measures
the whole command).

Baseline (the tutorial's way): ``requests.get`` pages with ``$limit``/``$offset``, every row in
one Python list, ``json.dumps`` of the whole list to a file; then ``pd.read_json``, ``astype``,
``pa.Table.from_pandas`` and ``table.append`` into a separate Iceberg table.

Every measured phase runs in its own fresh child process (this script with ``--phase``), so the
peak RSS reported is that phase's alone. The replay server (``civiclake.testing.socrata``) runs
in a process of its own as well. Figures are printed, never asserted.

    .venv/bin/python bench/bnt_bench.py [--rows N] [--page-size N] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DATASET_ID = "qzve-kjga"
FIRST_DAY = date(2020, 1, 1)  # the replay server's default --start
ROWS_PER_DAY = 10 * 2 * 24  # plazas x directions x hours, as civiclake.testing.socrata.bnt_rows
RUN_ID = "bench-ours"
BASELINE_RUN_ID = "bench-baseline"
BASELINE_TABLE = "bench.baseline_traffic"
BASELINE_BLOB = "tutorial/traffic.json"  # under CIVICLAKE_HOME
HANDOFF_FILE = "bench-fetch.json"  # ours-fetch -> ours-stage-load: the raw page URLs
RSS_TARGET_MB = 500.0
THROUGHPUT_TARGET = 200_000  # stage -> Iceberg rows/s
SERVER_START_TIMEOUT = 600.0
PHASE_TIMEOUT = 3600.0
OURS_PHASES = ("ours-fetch", "ours-stage-load")
BASELINE_PHASES = ("baseline-fetch-stage", "baseline-load")

Result = dict[str, Any]


# ---------------------------------------------------------------- shared helpers


def date_range(rows: int) -> tuple[date, date]:
    """``[start, stop)`` covering the ``rows`` synthetic rows (480 a day from 2020-01-01)."""
    days = max(1, math.ceil(rows / ROWS_PER_DAY))
    return FIRST_DAY, FIRST_DAY + timedelta(days=days)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (``ru_maxrss`` is KB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def source_name(socrata_url: str, dataset_id: str) -> str:
    """The ``load_source`` the flow stamps on rows loaded from the API."""
    return f"socrata:{socrata_url.split('://', 1)[-1]}/{dataset_id}"


def table_rows(table: Any) -> int:
    """Rows in an Iceberg table's current snapshot, summed over its data files' metadata."""
    return sum(task.file.record_count for task in table.scan().plan_files())


# ---------------------------------------------------------------- child phases


def phase_ours_fetch(rows: int, page_size: int) -> Result:
    """Fetch and stage, overlapped (each raw page typed into Iceberg data files as soon as it
    is written), as the flow's ``fetch`` task does."""
    from civiclake.config import get_settings
    from civiclake.flows.bnt import fetch_and_stage
    from civiclake.lake import Lake
    from civiclake.sources import bnt
    from civiclake.sources.socrata import SocrataClient

    import_rss = peak_rss_mb()
    settings = get_settings()
    lake = Lake(settings.resolved_lake_url)
    load_range = bnt.LoadRange(*date_range(rows))
    source = source_name(settings.socrata_url, settings.bnt_dataset_id)
    began = time.perf_counter()
    with SocrataClient.from_settings(settings) as client:
        result, staged = fetch_and_stage(
            settings, client, load_range, run_id=RUN_ID, source=source, page_size=page_size
        )
    seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    raw_bytes = sum(lake.fs.size(url) for url in result.urls)
    lake.write_bytes(lake.join("stage", HANDOFF_FILE), pickle.dumps(staged))  # to the next phase
    handoff = {"rows": result.rows, "stage_seconds": staged.seconds, "stage_peak_rss_mb": peak}
    (settings.home_dir / HANDOFF_FILE).write_text(json.dumps(handoff))
    return {
        "rows": result.rows,
        "expected": result.rows,  # a fetch that ends has every row the portal counts
        "pages": result.pages,
        "retries": result.retries,
        "raw_mb": raw_bytes / 1e6,
        "seconds": seconds,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_ours_stage_load(rows: int, page_size: int) -> Result:
    """The commit of the staged data files (table, then rejects), as the ``load`` task does."""
    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.flows.bnt import commit_load
    from civiclake.lake import Lake
    from civiclake.pipeline import Staged
    from civiclake.slices import Window
    from civiclake.sources import bnt

    import_rss = peak_rss_mb()
    settings = get_settings()
    lake = Lake(settings.resolved_lake_url)
    handoff = json.loads((settings.home_dir / HANDOFF_FILE).read_text())
    with lake.open(lake.join("stage", HANDOFF_FILE)) as handle:
        staged: Staged = pickle.loads(handle.read())
    load_range = bnt.LoadRange(*date_range(rows))
    source = source_name(settings.socrata_url, settings.bnt_dataset_id)

    began = time.perf_counter()
    loaded = commit_load(
        settings,
        staged,
        run_id=RUN_ID,
        source=source,
        load_range=load_range,
        rows_fetched=handoff["rows"],
        load_key=str(load_range),
        replaced=Window(bnt.DATE_FIELD, load_range.start, load_range.stop),
    )
    commit_seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    table = tables.load_catalog(settings).load_table(bnt.TABLE)
    return {
        "rows": staged.rows_read,
        "rows_valid": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "rows_written": loaded["rows_loaded"],
        "table_rows": table_rows(table),
        "snapshot_total_rows": loaded["table_rows"],
        "data_files": len(list(table.scan().plan_files())),
        "stage_seconds": handoff["stage_seconds"],
        "commit_seconds": commit_seconds,
        "seconds": commit_seconds,
        "stage_peak_rss_mb": handoff["stage_peak_rss_mb"],
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_baseline_fetch_stage(rows: int, page_size: int) -> Result:
    """The tutorial's fetch: ``requests`` pages into one list, ``json.dumps`` of it to a file."""
    import requests

    from civiclake.config import get_settings
    from civiclake.sources.socrata import date_range_where

    import_rss = peak_rss_mb()
    settings = get_settings()
    url = f"{settings.socrata_url}/resource/{settings.bnt_dataset_id}.json"
    # The same $where and $order as ours, so both hit the replay server's warmed cache.
    where = date_range_where("date", *date_range(rows))
    blob = settings.home_dir / BASELINE_BLOB

    began = time.perf_counter()
    records: list[dict[str, Any]] = []
    offset = 0
    pages = 0
    while True:
        params = {"$where": where, "$order": ":id", "$limit": page_size, "$offset": offset}
        response = requests.get(url, params=params, timeout=120)
        response.raise_for_status()
        page = response.json()
        pages += 1
        records.extend(page)
        offset += len(page)
        if len(page) < page_size:
            break
    fetch_seconds = time.perf_counter() - began
    fetch_peak = peak_rss_mb()

    began = time.perf_counter()
    blob.parent.mkdir(parents=True, exist_ok=True)
    with open(blob, "w", encoding="utf-8") as out:
        out.write(json.dumps(records))
    stage_seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    return {
        "rows": len(records),
        "pages": pages,
        "blob_mb": blob.stat().st_size / 1e6,
        "fetch_seconds": fetch_seconds,
        "stage_seconds": stage_seconds,
        "seconds": fetch_seconds + stage_seconds,
        "fetch_peak_rss_mb": fetch_peak,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


def phase_baseline_load(rows: int, page_size: int) -> Result:
    """The tutorial's load: ``read_json``, ``astype``, ``from_pandas``, ``table.append``."""
    import pandas as pd
    import pyarrow as pa

    from civiclake import tables
    from civiclake.config import get_settings
    from civiclake.sources import bnt

    import_rss = peak_rss_mb()
    settings = get_settings()
    blob = settings.home_dir / BASELINE_BLOB
    source = source_name(settings.socrata_url, settings.bnt_dataset_id)

    began = time.perf_counter()
    frame = pd.read_json(blob)
    read_seconds = time.perf_counter() - began

    began = time.perf_counter()
    frame["date"] = pd.to_datetime(frame["date"])
    frame = frame.astype(
        {
            "plaza_id": "int32",
            "hour": "int32",
            "vehicles_e_zpass": "int64",
            "vehicles_vtoll": "int64",
        }
    )
    frame["facility"] = frame["plaza_id"].map(bnt.PLAZA_FACILITIES)
    frame["load_run_id"] = BASELINE_RUN_ID
    frame["load_source"] = source
    frame["loaded_at"] = pd.Timestamp.now(tz="UTC")
    arrow = pa.Table.from_pandas(frame[bnt.ARROW_SCHEMA.names], preserve_index=False)
    # date32 and timestamp[us, UTC], or PyIceberg refuses the table.
    arrow = arrow.cast(bnt.ARROW_SCHEMA)
    convert_seconds = time.perf_counter() - began

    began = time.perf_counter()
    catalog = tables.load_catalog(settings)
    table = tables.ensure_table(catalog, BASELINE_TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)
    table.append(arrow)
    append_seconds = time.perf_counter() - began
    peak = peak_rss_mb()
    return {
        "rows": arrow.num_rows,
        "table_rows": table_rows(table),
        "data_files": len(list(table.scan().plan_files())),
        "read_seconds": read_seconds,
        "convert_seconds": convert_seconds,
        "append_seconds": append_seconds,
        "seconds": read_seconds + convert_seconds + append_seconds,
        "peak_rss_mb": peak,
        "import_rss_mb": import_rss,
    }


PHASES: dict[str, Callable[[int, int], Result]] = {
    "ours-fetch": phase_ours_fetch,
    "ours-stage-load": phase_ours_stage_load,
    "baseline-fetch-stage": phase_baseline_fetch_stage,
    "baseline-load": phase_baseline_load,
}


def run_phase(name: str, rows: int, page_size: int) -> None:
    """Child side: run one phase and print its measurements as one JSON line."""
    result = PHASES[name](rows, page_size)
    print(json.dumps({"phase": name, **result}), flush=True)


# ---------------------------------------------------------------- parent: server and children


def start_server(rows: int, latency: float = 0.0) -> tuple[subprocess.Popen[str], str, float]:
    """Start the replay server process (every answer ``latency`` seconds late); return it,
    its URL and how long it took to serve."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "civiclake.testing.socrata",
            "--rows",
            str(rows),
            "--dataset",
            DATASET_ID,
            "--start",
            FIRST_DAY.isoformat(),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=SERVER_START_TIMEOUT):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"replay server printed no URL in {SERVER_START_TIMEOUT:.0f} s")
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"replay server failed to start (first line: {url!r})")
    return proc, url, time.perf_counter() - began


def stop_server(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the replay server, SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_peak_rss_mb(pid: int) -> float | None:
    """The server's peak RSS (VmHWM), or None where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def warm_up(url: str, rows: int) -> float:
    """Ask once for the query both fetches page through, so neither pays the server's sort.

    The replay server filters and sorts by ``:id`` on the first request of a query and caches
    the result; that cost belongs to the fake server, not to either client.
    """
    from civiclake.sources.socrata import date_range_where

    where = date_range_where("date", *date_range(rows))
    began = time.perf_counter()
    for params in (
        {"$select": "count(*)", "$where": where},
        {"$where": where, "$order": ":id", "$limit": "1", "$offset": "0"},
    ):
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(
            f"{url}/resource/{DATASET_ID}.json?{query}", timeout=600
        ) as response:
            response.read()
    return time.perf_counter() - began


def child_env(home: Path, url: str) -> dict[str, str]:
    """The environment of a phase: a private CIVICLAKE_HOME, the replay server, no telemetry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CIVICLAKE_") and k != "SOCRATA_APP_TOKEN"
    }
    env.update(
        CIVICLAKE_HOME=str(home),
        CIVICLAKE_SOCRATA_URL=url,
        CIVICLAKE_BNT_DATASET_ID=DATASET_ID,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    return env


def run_child(name: str, args: argparse.Namespace, env: dict[str, str]) -> Result:
    """Run one phase in a fresh interpreter and return its JSON line."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        name,
        "--rows",
        str(args.rows),
        "--page-size",
        str(args.page_size),
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
        f"  {name:<22} {result['rows']:>12,} rows  {result['seconds']:8.2f} s  "
        f"peak RSS {result['peak_rss_mb']:7.1f} MB  (process {wall:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


# ---------------------------------------------------------------- parent: report


def rate(rows: int, seconds: float) -> float:
    """Rows per second (inf for a zero duration)."""
    return rows / seconds if seconds > 0 else float("inf")


def ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` as ``1.23x``."""
    return f"{numerator / denominator:6.2f}x" if denominator > 0 else "     -"


def verdict(ok: bool) -> str:
    """How a target is reported: never an exit status."""
    return "met" if ok else "NOT met"


class Table:
    """Fixed-width lines: phase, rows, seconds, rows/s, peak RSS, RSS after imports."""

    HEADER = (
        f"{'phase':<44} {'rows':>10} {'seconds':>8} {'rows/s':>10} "
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
            f"{label:<44} {rows:>10,} {seconds:>8.2f} {rate(rows, seconds):>10,.0f} "
            f"{rss} {imports}".rstrip()
        )


def report(
    args: argparse.Namespace,
    results: dict[str, Result],
    server: dict[str, Any],
) -> str:
    """The human table: one line per phase, ratios, checks and the issue's targets."""
    start, stop = date_range(args.rows)
    rss = server["peak_rss_mb"]
    out = [
        f"MTA B&T pipeline benchmark: {args.rows:,} rows [{start}, {stop}), "
        f"page size {args.page_size:,}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        f"replay server: ready in {server['start_seconds']:.1f} s, warm-up (filter + sort by :id) "
        f"{server['warm_seconds']:.1f} s, peak RSS "
        + (f"{rss:.0f} MB" if rss is not None else "n/a")
        + " (its own process, not in any phase)",
        f"load average (1 min) before {server['load_before']:.2f}, after {server['load_after']:.2f}"
        " (other work on the machine makes the seconds noisy)",
        "",
    ]
    table = Table()
    fetch = results["ours-fetch"]
    load = results["ours-stage-load"]
    n = load["rows"]
    table.add(
        "ours  fetch + stage, overlapped",
        fetch["rows"],
        fetch["seconds"],
        fetch["peak_rss_mb"],
        fetch["import_rss_mb"],
    )
    table.add(
        "ours  of which stage (engine time, overlapped)",
        n,
        load["stage_seconds"],
        load["stage_peak_rss_mb"],
    )
    table.add(
        "ours  commit: data files -> Iceberg",
        n,
        load["seconds"],
        load["peak_rss_mb"],
        load["import_rss_mb"],
    )
    ours_total = fetch["seconds"] + load["seconds"]
    ours_peak = max(fetch["peak_rss_mb"], load["peak_rss_mb"])
    table.add("ours  end to end (RSS: max of the processes)", n, ours_total, ours_peak)

    base_fetch = results.get("baseline-fetch-stage")
    base_load = results.get("baseline-load")
    comparison: list[str] = []
    if base_fetch and base_load:
        m = base_load["rows"]
        table.add(
            "base  fetch: requests -> list (peak so far)",
            base_fetch["rows"],
            base_fetch["fetch_seconds"],
            base_fetch["fetch_peak_rss_mb"],
        )
        table.add(
            "base  stage: json.dumps -> file", base_fetch["rows"], base_fetch["stage_seconds"]
        )
        table.add(
            "base  fetch + stage (one process)",
            base_fetch["rows"],
            base_fetch["seconds"],
            base_fetch["peak_rss_mb"],
            base_fetch["import_rss_mb"],
        )
        table.add("base  load: pd.read_json", m, base_load["read_seconds"])
        table.add("base  load: astype + from_pandas + cast", m, base_load["convert_seconds"])
        table.add("base  load: table.append", m, base_load["append_seconds"])
        table.add(
            "base  load: file -> Iceberg (one process)",
            m,
            base_load["seconds"],
            base_load["peak_rss_mb"],
            base_load["import_rss_mb"],
        )
        base_total = base_fetch["seconds"] + base_load["seconds"]
        base_peak = max(base_fetch["peak_rss_mb"], base_load["peak_rss_mb"])
        table.add("base  end to end (RSS: max of the processes)", m, base_total, base_peak)
        pairs = [
            ("fetch: ours fetch / base fetch + stage", fetch, base_fetch),
            ("load:  ours stage -> Iceberg / base load", load, base_load),
        ]
        comparison = ["", "ours vs baseline    (speed-up = base s / ours s; RSS = ours / base)"]
        for label, ours, base in pairs:
            comparison.append(
                f"  {label:<42} speed-up {ratio(base['seconds'], ours['seconds'])}"
                f"   RSS {ratio(ours['peak_rss_mb'], base['peak_rss_mb'])}"
            )
        comparison.append(
            f"  {'end to end':<42} speed-up {ratio(base_total, ours_total)}"
            f"   RSS {ratio(ours_peak, base_peak)}"
        )
    out += table.lines + comparison

    def matches(count: int) -> str:
        return ("equals" if count == args.rows else "DIFFERS FROM") + f" --rows {args.rows:,}"

    out += [
        "",
        "checks",
        f"  ours table rows {load['table_rows']:,} (snapshot total-records "
        f"{load['snapshot_total_rows']:,}, {load['data_files']} data files, "
        f"{load['rows_rejected']:,} rejects): {matches(load['table_rows'])}",
    ]
    if base_load:
        out.append(
            f"  baseline table rows {base_load['table_rows']:,} "
            f"({base_load['data_files']} data files): {matches(base_load['table_rows'])}"
        )

    throughput = rate(n, load["stage_seconds"] + load["commit_seconds"])
    target = f"{RSS_TARGET_MB:.0f} MB"
    out += [
        "",
        "targets (issue)",
        f"  {'peak RSS < ' + target + ', ours fetch':<42} {fetch['peak_rss_mb']:>12.1f} MB"
        f"      {verdict(fetch['peak_rss_mb'] < RSS_TARGET_MB)}",
        f"  {'peak RSS < ' + target + ', ours stage -> Iceberg':<42} "
        f"{load['peak_rss_mb']:>12.1f} MB      {verdict(load['peak_rss_mb'] < RSS_TARGET_MB)}",
        f"  {f'stage -> Iceberg >= {THROUGHPUT_TARGET:,} rows/s':<42} {throughput:>12,.0f} rows/s  "
        f"{verdict(throughput >= THROUGHPUT_TARGET)}",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; ``--phase`` is internal (the parent runs each phase with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows the server serves")
    parser.add_argument("--page-size", type=int, default=50_000, help="rows per API page")
    parser.add_argument("--skip-baseline", action="store_true", help="measure only our pipeline")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.page_size < 1:
        parser.error("--rows and --page-size must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parent: start the server, run every phase in its own process, print the table."""
    args = parse_args(argv)
    if args.phase:
        run_phase(args.phase, args.rows, args.page_size)
        return 0

    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="bnt-bench-"))
    proc: subprocess.Popen[str] | None = None
    try:
        print(f"starting the replay server with {args.rows:,} rows ...", file=sys.stderr)
        proc, url, start_seconds = start_server(args.rows)
        warm_seconds = warm_up(url, args.rows)
        print(
            f"  server {url} ready in {start_seconds:.1f} s, warmed in {warm_seconds:.1f} s",
            file=sys.stderr,
        )
        results: dict[str, Result] = {}
        ours_env = child_env(workdir / "ours", url)
        for name in OURS_PHASES:
            results[name] = run_child(name, args, ours_env)
        if not args.skip_baseline:
            baseline_env = child_env(workdir / "baseline", url)
            for name in BASELINE_PHASES:
                results[name] = run_child(name, args, baseline_env)
        server = {
            "start_seconds": start_seconds,
            "warm_seconds": warm_seconds,
            "peak_rss_mb": server_peak_rss_mb(proc.pid),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }
        print()
        print(report(args, results, server))
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
