"""A year of B&T (175,200 rows) end to end: the fetch floor against ``civiclake bnt run`` on
each Prefect path (temporary server, ``civiclake server``, a running ``prefect server``).

The Socrata replay server (``civiclake.testing.socrata``, 480 rows a day from 2024-01-01) runs
in its own process (the hidden ``--phase replay``) and writes the path of every request it
answers to a file. Every measured command is a fresh process, timed from its start to its exit:

* floor: a bare ``httpx`` fetch (a fresh child, ``--phase floor``) of exactly the requests the
  last civiclake run made (its count query and its data pages, read to the last byte); the
  time of the fetch loop is the floor, the child's whole life is printed too;
* ``civiclake bnt run --start-date 2024-01-01 --stop-date 2024-12-31`` in three modes, each with
  its own CIVICLAKE_HOME (the runs of a mode replace the same year) and PREFECT_HOME:
  - temporary: ``CIVICLAKE_SERVER_AUTOSTART=0``, no server running: Prefect's temporary server
    per command, as before ``civiclake server`` existed;
  - civiclake server: the default now: the first run starts ``civiclake server``, the next
    runs reuse it (it is stopped at the end of the mode);
  - teardown: as civiclake server, with ``CIVICLAKE_SLOW_EXIT=1`` (the interpreter's teardown
    at exit, which ``civiclake._private.fast_exit`` skips after a flow ran);
  - prefect server: ``prefect server start`` (testsupport.prefect_server) and
    ``PREFECT_API_URL``.

The runs go in rounds: round 0 is each mode's first run (cold: the table is created, a server
starts), printed apart; each of the ``--runs`` next rounds runs every mode once (and the floor),
in a rotating order, so that all modes see the same machine while other work on it comes and
goes. The medians are compared with the floor (x-floor ratio and floor + s).
Figures are printed, never asserted. Temp dirs and every process started here are removed.

    .venv/bin/python bench/server_bench.py [--runs N] [--modes temporary,civiclake,teardown,prefect]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = "qzve-kjga"
FIRST_DAY = date(2024, 1, 1)
DAYS = 365  # [2024-01-01, 2024-12-31): 175,200 rows, the "year"
RUN_ARGS = ["bnt", "run", "--start-date", "2024-01-01", "--stop-date", "2024-12-31"]
RUN_TIMEOUT = 900.0
MODES = ("temporary", "civiclake", "teardown", "prefect")
LABELS = {
    "floor": "bare httpx fetch of the same pages (floor)",
    "temporary": "civiclake, temporary Prefect server (before)",
    "civiclake": "civiclake, civiclake server (default now)",
    "teardown": "  the same with CIVICLAKE_SLOW_EXIT=1",
    "prefect": "civiclake, prefect server + PREFECT_API_URL",
}


# ---------------------------------------------------------------- children


def phase_replay(log: Path, latency: float) -> None:
    """The replay server: prints its URL, appends each request's path to ``log``; each
    answer waits ``latency`` seconds."""
    from civiclake.testing.socrata import SocrataServer, bnt_rows

    class LoggedServer(SocrataServer):
        def _handle(self, raw_path: str, headers: dict[str, str]) -> Any:
            answer = super()._handle(raw_path, headers)
            with log.open("a") as out:
                out.write(raw_path + "\n")
            return answer

    server = LoggedServer({DATASET_ID: bnt_rows(FIRST_DAY, DAYS)}, latency=latency)
    server.start()
    print(server.url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def phase_floor(url: str, paths_file: Path) -> None:
    """GET every path with one httpx client, reading each body whole; one JSON line."""
    import httpx

    imported = time.perf_counter()
    paths = paths_file.read_text().split()
    bodies = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for path in paths:
            answer = client.get(path)
            answer.raise_for_status()
            bodies.append(answer.content)
    done = time.perf_counter()
    pages = [json.loads(b) for p, b in zip(paths, bodies, strict=True) if "count" not in p]
    rows = sum(map(len, pages))
    parsed = time.perf_counter()
    size = sum(map(len, bodies))
    result = {"fetch": done - imported, "parse": parsed - done, "rows": rows}
    print(json.dumps({**result, "requests": len(paths), "bytes": size}))


# ---------------------------------------------------------------- parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CIVICLAKE_", "PREFECT_")) and k != "SOCRATA_APP_TOKEN"
    }
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", COLUMNS="200")
    env.update(extra)
    return env


def civiclake_command() -> list[str]:
    script = REPO / ".venv" / "bin" / "civiclake"
    return [str(script)] if script.exists() else [sys.executable, "-m", "civiclake.cli"]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds of the command's own processes (a temporary server included,
    a long-running server not), exit code, output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, done.stdout + done.stderr


@contextlib.contextmanager
def replay_server(tmp: Path, latency: float) -> Iterator[tuple[str, Path]]:
    log = tmp / "requests.log"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--phase", "replay", "--arg", str(log), str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"replay server did not start: {url!r}")
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rows_loaded(output: str) -> str:
    for line in output.splitlines():
        if "rows loaded" in line:
            return line.replace("│", " ").split()[-1]
    return "?"


def mode_env(mode: str, tmp: Path, url: str) -> dict[str, str]:
    # teardown shares civiclake's home, so its server: the two differ only in the exit
    name = "civiclake" if mode == "teardown" else mode
    env = clean_env(
        CIVICLAKE_HOME=str(tmp / f"home-{name}"),
        CIVICLAKE_SOCRATA_URL=url,
        CIVICLAKE_BNT_DATASET_ID=DATASET_ID,
        PREFECT_HOME=str(tmp / f"prefect-{name}"),
    )
    if mode == "temporary":
        env["CIVICLAKE_SERVER_AUTOSTART"] = "0"
    elif mode == "teardown":
        env["CIVICLAKE_SLOW_EXIT"] = "1"  # Python's interpreter teardown after the run
    return env


def floor_once(tmp: Path, url: str) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--phase", "floor", "--arg", url, str(tmp / "paths.txt")],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    return time.perf_counter() - began, json.loads(done.stdout.strip().splitlines()[-1])


def run_rounds(
    modes: list[str], runs: int, tmp: Path, url: str, log: Path
) -> dict[str, dict[str, Any]]:
    """Round 0: each mode's first run; rounds 1..runs: one run of each mode (and the floor),
    the order rotating, so every mode sees the same machine (other work on it comes and goes)."""
    envs = {mode: mode_env(mode, tmp, url) for mode in modes}
    results: dict[str, dict[str, Any]] = {
        name: {"first": None, "times": [], "cpu": [], "rows": "?"} for name in [*modes, "floor"]
    }
    floor = results["floor"] | {"wall": [], "parse": []}
    results["floor"] = floor
    server = None
    try:
        if "prefect" in modes:
            from testsupport.prefect_server import PrefectServer

            server = PrefectServer(base_dir=tmp).start()
            envs["prefect"]["PREFECT_API_URL"] = server.api_url
        for index in range(runs + 1):
            shift = index % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                print(f"  round {index}/{runs}: {mode} ...", file=sys.stderr, flush=True)
                log.write_text("")
                seconds, cpu, code, output = timed([*civiclake_command(), *RUN_ARGS], envs[mode])
                if code != 0:
                    raise RuntimeError(f"{mode} run failed (exit {code}):\n{output[-3000:]}")
                results[mode]["rows"] = rows_loaded(output)
                print(f"    {seconds:.2f} s, CPU {cpu:.2f} s", file=sys.stderr, flush=True)
                if index == 0:
                    results[mode]["first"] = seconds
                else:
                    results[mode]["times"].append(seconds)
                    results[mode]["cpu"].append(cpu)
                shutil.copy(log, tmp / "paths.txt")  # the requests of a run, for the floor
            wall, info = floor_once(tmp, url)
            floor.update({k: info[k] for k in ("requests", "bytes", "rows")})
            if index == 0:
                floor["first"] = info["fetch"]
            else:
                floor["times"].append(info["fetch"])
                floor["wall"].append(wall)
                floor["parse"].append(info["parse"])
    finally:
        for mode in ("civiclake", "teardown"):
            if mode in envs:
                stop = [*civiclake_command(), "server", "stop"]
                subprocess.run(stop, env=envs[mode], capture_output=True)
        if server is not None:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per mode (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each answer of the replay server waits (0.44: data.ny.gov, measured)",
    )
    parser.add_argument("--phase", choices=("replay", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--arg", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "replay":
        phase_replay(Path(args.arg[0]), float(args.arg[1]))
        return 0
    if args.phase == "floor":
        phase_floor(args.arg[0], Path(args.arg[1]))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")

    one, five, fifteen = os.getloadavg()
    print(
        f"B&T, a year ({DAYS * 480:,} rows, pages of 50,000): floor vs civiclake bnt run per "
        f"Prefect path, first run + median of {args.runs}, replay latency {args.latency:.2f} s\n"
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Prefect {importlib.metadata.version('prefect')}; "
        f"load average at start {one:.2f} / {five:.2f} / {fifteen:.2f}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="civiclake-server-bench-"))
    try:
        with replay_server(tmp, args.latency) as (url, log):
            results = run_rounds(modes, args.runs, tmp, url, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    floor = statistics.median(results["floor"]["times"])
    one, five, fifteen = os.getloadavg()
    print(f"load average at end {one:.2f} / {five:.2f} / {fifteen:.2f}")
    f = results["floor"]
    print(
        f"floor: {f['requests']} requests, {f['bytes'] / 1e6:.1f} MB of JSON, {f['rows']:,} rows; "
        f"json.loads of the pages after it, median {statistics.median(f['parse']):.2f} s; "
        f"the floor's process (interpreter, import httpx, fetch) median "
        f"{statistics.median(f['wall']):.2f} s"
    )
    print()
    header = (
        f"{'':46} {'first s':>8} {'median s':>9} {'x floor':>8} {'floor +':>8} {'CPU s':>6}"
        "  runs (s)"
    )
    print(header)
    print("-" * len(header))
    for name in ["floor", *modes]:
        r = results[name]
        median = statistics.median(r["times"])
        cpu = f"{statistics.median(r['cpu']):6.2f}" if r["cpu"] else f"{'':6}"
        runs_text = ", ".join(f"{t:.2f}" for t in r["times"])
        print(
            f"{LABELS[name]:46} {r['first']:8.2f} {median:9.2f} {median / floor:7.1f}x "
            f"{median - floor:+7.2f}s {cpu}  {runs_text}"
        )
    print(
        "\nfirst: each mode's first run (table created; temporary: empty PREFECT_HOME; civiclake:"
        " the server started in an empty home; teardown shares civiclake's home and server)"
        "\nCPU s: median CPU seconds of the command's own processes (its temporary server"
        " included, a long-running server not)"
    )
    for mode in modes:
        print(f"{mode}: rows loaded per run {results[mode]['rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
