"""Benchmark the startup of ``civiclake bnt run``: command start -> first source request.

A Socrata replay server (``civiclake.testing.socrata``) runs in this process and stamps the
arrival of every request. Each measured run is a fresh ``.venv/bin/civiclake bnt run
--start-date 2024-01-01 --stop-date 2024-01-02`` with its own empty ``CIVICLAKE_HOME``, in two
modes:

* ephemeral: no ``PREFECT_API_URL``; one ``PREFECT_HOME`` for the mode's runs, so the first run
  is cold (empty home: database created and migrated) and the next ones are warm;
* server: ``prefect server start`` once (its own ``PREFECT_HOME``), ``PREFECT_API_URL`` set.

Besides the wall time, each run reports the CPU seconds its process group had used when its
first request arrived (less sensitive to other work on a shared machine).

Then, to find where the time goes: import costs (wall and CPU of fresh interpreters, and
``-X importtime``), a traced run per mode (``phase_trace`` in a child started with a ``-c``
bootstrap: the CLI called in-process with timers around the imports, Prefect's flow/task engine
and every HTTP request), a cProfile of one run against the server, and the CLI pre-check that
incremental runs do (catalog open; the hidden ``--phase precheck``). Figures are printed,
never asserted. Temp dirs and every process started here are removed at the end.

    .venv/bin/python bench/startup_bench.py [--runs N] [--skip-ephemeral] [--skip-server]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import pstats
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUN_ARGS = ["bnt", "run", "--start-date", "2024-01-01", "--stop-date", "2024-01-02"]
DATASET_ID = "qzve-kjga"
TARGET_S = 3.0  # running server: command start -> first source request
RUN_TIMEOUT = 600.0
SERVER_START_TIMEOUT = 300.0
SETTLE_LIMIT = 90.0
T0_VAR = "STARTUP_BENCH_T0"
HARNESS = "bench harness: import startup_bench (not in the real command)"
# What a flows/bnt.py that imports pyarrow/pyiceberg inside its stage/load tasks would still
# import before the fetch task's first request (the CLI, Prefect, blocks, locks, the HTTP client).
FETCH_PATH_IMPORTS = (
    "import civiclake.cli, civiclake.flows, prefect; "
    "from prefect import flow, task, get_run_logger; "
    "import prefect.artifacts, prefect.cache_policies, prefect.runtime, fsspec; "
    "import civiclake.blocks, civiclake.flows._locks, civiclake.flows._params; "
    "import civiclake.sources.socrata, civiclake._private.progress"
)
FULL_IMPORTS = "civiclake.cli + civiclake.flows.bnt"
FETCH_IMPORTS = "the fetch path only (see FETCH_PATH_IMPORTS)"
TRACE_BOOTSTRAP = (
    "import time; booted = time.time(), time.process_time(); import sys; "
    "sys.path.insert(0, {folder!r}); import startup_bench; startup_bench.phase_trace(booted)"
)
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+\s*\| (.*)$")

Result = dict[str, Any]


# ---------------------------------------------------------------- helpers


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def civiclake_command() -> list[str]:
    script = REPO / ".venv" / "bin" / "civiclake"
    if script.exists():
        return [str(script)]
    found = shutil.which("civiclake")
    if found:
        return [found]
    return [sys.executable, "-m", "civiclake.cli"]


def child_env(**extra: str) -> dict[str, str]:
    """The inherited environment without CIVICLAKE_*/PREFECT_* settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CIVICLAKE_", "PREFECT_")) and k != "SOCRATA_APP_TOKEN"
    }
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    # "ephemeral" is Prefect's temporary server: no `civiclake server` started in the run's home
    env.update(CIVICLAKE_SERVER_AUTOSTART="0")
    env.update(extra)
    return env


def kill_group(pid: int) -> None:
    """End what is left of a process group this script started (the child is its leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def log_times(text: str, t0: float) -> dict[str, float]:
    """Seconds from ``t0`` to Prefect's 'Beginning flow run' and the fetch task's first log."""
    found: dict[str, float] = {}
    day = date.fromtimestamp(t0)
    for line in text.splitlines():
        match = LOG_LINE.match(line.strip())
        if not match:
            continue
        stamp = datetime.combine(day, dtime.fromisoformat(match.group(1))).timestamp()
        if stamp < t0 - 3600:  # the run crossed midnight
            stamp = datetime.combine(day + timedelta(days=1), dtime.fromisoformat(match.group(1)))
            stamp = stamp.timestamp()
        message = match.group(2)
        if "Beginning flow run" in message:
            found.setdefault("flow_begin", stamp - t0)
        elif message.startswith("Task run 'fetch"):
            found.setdefault("fetch_log", stamp - t0)
    return found


class Arrivals:
    """The replay server, with the arrival time of every request (``time.time()``).

    While ``watch`` is ``(pgid, n)``, the request number ``n + 1`` (the watched command's first)
    also records the CPU seconds the command's process group has used by then (``first_cpu``).
    """

    def __init__(self) -> None:
        from civiclake.testing.socrata import SocrataServer, bnt_rows

        stamps: list[float] = []
        outer = self

        class TimedSocrataServer(SocrataServer):
            def _handle(self, raw_path: str, headers: dict[str, str]) -> Any:
                stamps.append(time.time())
                watch = outer.watch
                if watch is not None and len(stamps) == watch[1] + 1:
                    outer.first_cpu = group_cpu_seconds(watch[0])
                return super()._handle(raw_path, headers)

        self.stamps = stamps
        self.watch: tuple[int, int] | None = None
        self.first_cpu: float | None = None
        self.server = TimedSocrataServer({DATASET_ID: bnt_rows(date(2024, 1, 1), 3)})

    def __enter__(self) -> Arrivals:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url


def run_command(command: list[str], env: dict[str, str], arrivals: Arrivals, cwd: Path) -> Result:
    """Run one command; seconds to the first request the replay server saw, and in total."""
    seen = len(arrivals.stamps)
    t0 = time.time()
    env = {**env, T0_VAR: repr(t0)}
    arrivals.first_cpu = None
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    arrivals.watch = (proc.pid, seen)
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        output, _ = proc.communicate()
    finally:
        kill_group(proc.pid)  # an ephemeral server left behind by a crashed run
        arrivals.watch = None
    total = time.time() - t0
    first = arrivals.stamps[seen] - t0 if len(arrivals.stamps) > seen else None
    result: Result = {"first": first, "total": total, "exit": proc.returncode, "output": output}
    result["first_cpu"] = arrivals.first_cpu
    result.update(log_times(output, t0))
    return result


# ---------------------------------------------------------------- child: traced run


Stamp = tuple[float, float]  # (time.time(), time.process_time())


def stamp() -> Stamp:
    return time.time(), time.process_time()


def phase_trace(booted: Stamp) -> None:
    """Run the CLI in this process with timers around the steps before the first request.

    ``booted`` is when the interpreter ran its first line (the ``-c`` bootstrap of
    ``run_trace``), before this script's own imports. Every event has wall-clock seconds since
    the command started and this process's CPU seconds (all threads) at its start and end.
    """
    t0 = float(os.environ[T0_VAR])
    socrata = os.environ["CIVICLAKE_SOCRATA_URL"].split("://", 1)[-1]
    events: list[dict[str, Any]] = []

    def record(label: str, start: Stamp, end: Stamp) -> None:
        events.append(
            {
                "label": label,
                "start": start[0] - t0,
                "end": end[0] - t0,
                "cpu_start": start[1],
                "cpu_end": end[1],
                "thread": threading.current_thread().name,
            }
        )

    record("interpreter ready", (t0, 0.0), booted)
    start = stamp()
    record(HARNESS, booted, start)
    import civiclake.cli

    record("import civiclake.cli (typer, rich, settings)", start, stamp())
    start = stamp()
    importlib.import_module("civiclake.flows")  # Prefect's offline defaults, before its import
    import prefect

    record("import prefect", start, stamp())
    start = stamp()
    import civiclake.sources.bnt
    import civiclake.tables

    record("import civiclake.tables + sources.bnt", start, stamp())
    start = stamp()
    import civiclake.flows.bnt

    record("import the rest of civiclake.flows.bnt", start, stamp())

    import httpx
    import prefect.client.orchestration as orchestration
    import prefect.context
    import prefect.flow_engine
    import prefect.flows
    import prefect.task_engine
    import prefect.tasks

    def wrap(owner: Any, attr: str, label: Callable[..., str] | str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = stamp()
            try:
                return original(*args, **kwargs)
            finally:
                record(label(*args, **kwargs) if callable(label) else label, began, stamp())

        setattr(owner, attr, wrapper)

    def http_label(client: Any, request: Any, **_: Any) -> str:
        where = "source" if request.url.netloc.decode() == socrata else "prefect"
        return f"HTTP[{where}] {request.method} {request.url.path}"

    original_async_send = httpx.AsyncClient.send

    async def async_send(self: Any, request: Any, **kwargs: Any) -> Any:
        began = stamp()
        try:
            return await original_async_send(self, request, **kwargs)
        finally:
            record(http_label(self, request), began, stamp())

    httpx.AsyncClient.send = async_send  # type: ignore[method-assign]
    wrap(httpx.Client, "send", http_label)

    original_get_client = orchestration.get_client

    @functools.wraps(original_get_client)
    def get_client(*args: Any, **kwargs: Any) -> Any:
        began = stamp()
        ephemeral = not os.environ.get("PREFECT_API_URL")
        if ephemeral and "prefect.server.api.server" not in sys.modules:
            import prefect.server.api.server as server_module

            record("import prefect.server (ephemeral only)", began, stamp())
            wrap(
                server_module.SubprocessASGIServer,
                "start",
                "ephemeral server: start subprocess, wait for /health",
            )
        try:
            return original_get_client(*args, **kwargs)
        finally:
            record("get_client()", began, stamp())

    for module in list(sys.modules.values()):  # modules that imported get_client by name
        if getattr(module, "get_client", None) is original_get_client:
            module.get_client = get_client  # type: ignore[attr-defined]

    wrap(prefect.flows.Flow, "__call__", lambda flow, *a, **k: f"flow call: {flow.name}")
    wrap(prefect.flows.Flow, "validate_parameters", "flow: validate_parameters")
    wrap(prefect.flows.Flow, "serialize_parameters", "flow: serialize_parameters")
    wrap(prefect.context.SyncClientContext, "__enter__", "client context enter")
    engine = prefect.flow_engine.FlowRunEngine
    wrap(engine, "create_flow_run", "flow engine: create_flow_run")
    wrap(engine, "begin_run", "flow engine: begin_run (state Running)")
    wrap(engine, "call_flow_fn", "flow body")
    wrap(prefect.tasks.Task, "__call__", lambda task, *a, **k: f"task call: {task.name}")
    task_engine = prefect.task_engine.SyncTaskRunEngine
    wrap(task_engine, "begin_run", lambda eng, *a, **k: f"task engine: begin_run {eng.task.name}")
    wrap(task_engine, "call_task_fn", lambda eng, *a, **k: f"task body: {eng.task.name}")

    sys.argv = ["civiclake", *RUN_ARGS]
    code: Any = 0
    try:
        civiclake.cli.main()
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({"exit": code, "events": events}), flush=True)


def first_event(events: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    matches = [e for e in events if e["label"].startswith(prefix)]
    return min(matches, key=lambda e: e["start"]) if matches else None


Segment = tuple[str, float, float]  # label, wall seconds, CPU seconds


def trace_breakdown(events: list[dict[str, Any]], first_request: float) -> list[Segment]:
    """Consecutive segments from command start to the first source request (they add up)."""
    wanted = [
        ("interpreter start", "interpreter ready", "end"),
        ("* bench harness (not in the real command)", HARNESS, "end"),
        ("import civiclake.cli (typer, rich, settings)", "import civiclake.cli", "end"),
        ("import prefect", "import prefect", "end"),
        ("import civiclake.tables, sources.bnt (pyarrow...)", "import civiclake.tables", "end"),
        ("import rest of flows.bnt (prefect.flows, tasks...)", "import the rest", "end"),
        ("CLI: parse options, pre-checks -> flow called", "flow call:", "start"),
        ("flow called -> flow body (engine, API calls)", "flow body", "start"),
        ("flow body -> fetch task called", "task call: fetch", "start"),
        ("fetch task called -> task body (task engine)", "task body: fetch", "start"),
        ("task body -> first source request", "HTTP[source]", "start"),
    ]
    points: list[tuple[str, float, float]] = []
    for label, prefix, edge in wanted:
        event = first_event(events, prefix)
        if event is None:
            return []
        points.append((label, event[edge], event[f"cpu_{edge}"]))
    label, _, cpu = points[-1]
    points[-1] = (label, first_request, cpu)  # the wall time as the replay server saw it
    segments = []
    previous_wall = previous_cpu = 0.0
    for label, wall, cpu in points:
        segments.append((label, wall - previous_wall, cpu - previous_cpu))
        previous_wall, previous_cpu = wall, cpu
    return segments


def engine_details(events: list[dict[str, Any]], first_request: float) -> list[Segment]:
    """Durations inside 'flow called -> flow body' (they overlap; not a sum)."""
    rows = []
    for prefix in (
        "flow: validate_parameters",
        "flow: serialize_parameters",
        "import prefect.server",
        "ephemeral server:",
        "get_client()",
        "client context enter",
        "HTTP[prefect] GET /api/admin/version",
        "flow engine: create_flow_run",
        "flow engine: begin_run",
        "task engine: begin_run fetch",
    ):
        event = first_event(events, prefix)
        if event and event["start"] < first_request:
            cpu = event["cpu_end"] - event["cpu_start"]
            rows.append((event["label"], event["end"] - event["start"], cpu))
    return rows


def api_calls(events: list[dict[str, Any]], first_request: float) -> list[dict[str, Any]]:
    return sorted(
        (
            e
            for e in events
            if e["label"].startswith("HTTP[prefect]") and e["start"] < first_request
        ),
        key=lambda e: e["start"],
    )


# ---------------------------------------------------------------- child: pre-check


def phase_precheck() -> None:
    """What ``civiclake bnt run`` without --start-date does before Prefect: open the catalog."""
    result: Result = {}
    start = time.perf_counter()
    import civiclake.cli  # noqa: F401
    from civiclake.config import get_settings
    from civiclake.flows import preflight

    result["import_cli"] = time.perf_counter() - start
    start = time.perf_counter()
    from civiclake import tables  # noqa: F401  (pyiceberg, pyarrow: the flow imports them too)
    from civiclake.sources import bnt  # noqa: F401

    result["import_tables"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        preflight.check_incremental_possible(get_settings())
        result["outcome"] = "table found"
    except Exception as exc:
        result["outcome"] = f"{type(exc).__name__}: {exc}"
    result["catalog_check"] = time.perf_counter() - start
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent: measurements


def measure_imports(cwd: Path) -> Result:
    env = child_env()
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    specs = (
        ("python -c pass", "pass", 1),
        ("import civiclake.cli", "import civiclake.cli", 3),
        ("import prefect", "import prefect", 3),
        (FULL_IMPORTS, "import civiclake.cli, civiclake.flows.bnt", 3),
        (FETCH_IMPORTS, FETCH_PATH_IMPORTS, 3),
    )
    for round_ in range(3):  # interleaved, so a burst of load hits every kind alike
        for label, code, repeat in specs:
            if round_ >= repeat:
                continue
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
            walls.setdefault(label, []).append(time.perf_counter() - began)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            cpus.setdefault(label, []).append(cpu)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import civiclake.flows.bnt"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0.0
    children: list[tuple[str, float]] = []
    by_package: dict[str, float] = {}
    # lines: "import time: self [us] | cumulative | <2 spaces per level>name"; children first
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    parsed = []
    for line in lines[1:]:
        _, _, rest = line.partition(":")
        own, cumulative, name = rest.split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        parsed.append((depth, name.strip(), int(cumulative) / 1e6))
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(own) / 1e6
    for index, (depth, name, cumulative) in enumerate(parsed):
        if name == "civiclake.flows.bnt":
            total = cumulative
            # its direct imports are the depth+1 lines just before it, back to a shallower one
            back = index - 1
            while back >= 0 and parsed[back][0] > depth:
                if parsed[back][0] == depth + 1:
                    children.append((parsed[back][1], parsed[back][2]))
                back -= 1
    children.sort(key=lambda item: -item[1])
    packages = sorted(by_package.items(), key=lambda item: -item[1])
    return {
        "walls": walls,
        "cpus": cpus,
        "importtime_total": total,
        "importtime_children": children[:6],
        "importtime_packages": packages[:12],
    }


def start_prefect_server(home: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    log = open(home / "server.log", "wb")  # noqa: SIM115  (closed with the process)
    began = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=child_env(PREFECT_HOME=str(home)),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}/api"
    deadline = began + SERVER_START_TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = (home / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prefect server exited {proc.returncode}:\n{tail}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.read().strip() == b"true":
                return proc, url, time.time() - began
        time.sleep(0.25)
    stop_prefect_server(proc)
    raise RuntimeError(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s")


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU seconds used so far by the processes of a process group (Linux /proc)."""
    ticks = 0
    found = False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # after "(comm)": state ppid pgrp ... utime(11) stime(12)
            ticks += int(fields[11]) + int(fields[12])
            found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def wait_until_idle(pgid: int, *, window: float = 2.0, busy: float = 0.15) -> float:
    """Wait (up to SETTLE_LIMIT) until the server uses < ``busy`` of a core; seconds waited.

    A server that just answered /health still runs its startup work (services, the first
    loops of its schedulers): measuring then would charge that to the first runs.
    """
    began = time.time()
    last = group_cpu_seconds(pgid)
    while last is not None and time.time() - began < SETTLE_LIMIT:
        time.sleep(window)
        now = group_cpu_seconds(pgid)
        if now is None or (now - last) / window < busy:
            break
        last = now
    return time.time() - began


def stop_prefect_server(proc: subprocess.Popen[bytes]) -> None:
    kill_group(proc.pid)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_mode(
    mode: str,
    runs: int,
    arrivals: Arrivals,
    tmp: Path,
    prefect_env: dict[str, str],
) -> list[Result]:
    results = []
    for index in range(1, runs + 1):
        home = Path(tempfile.mkdtemp(prefix=f"{mode}-{index}-", dir=tmp))
        env = child_env(CIVICLAKE_HOME=str(home), CIVICLAKE_SOCRATA_URL=arrivals.url, **prefect_env)
        result = run_command(civiclake_command() + RUN_ARGS, env, arrivals, REPO)
        result.update(mode=mode, run=index, home=str(home))
        results.append(result)
        first = "-" if result["first"] is None else f"{result['first']:.2f} s"
        print(
            f"  {mode:<10} run {index}: first request {first}, total {result['total']:.2f} s, "
            f"exit {result['exit']}  (load {load_average()})",
            file=sys.stderr,
            flush=True,
        )
        if result["exit"] != 0:
            tail = "\n".join(result["output"].splitlines()[-15:])
            print(f"    run failed, last lines:\n{tail}", file=sys.stderr, flush=True)
    return results


def run_trace(
    mode: str, arrivals: Arrivals, tmp: Path, prefect_env: dict[str, str]
) -> Result | None:
    home = Path(tempfile.mkdtemp(prefix=f"trace-{mode}-", dir=tmp))
    env = child_env(CIVICLAKE_HOME=str(home), CIVICLAKE_SOCRATA_URL=arrivals.url, **prefect_env)
    folder = str(Path(__file__).resolve().parent)
    command = [sys.executable, "-c", TRACE_BOOTSTRAP.format(folder=folder)]
    result = run_command(command, env, arrivals, REPO)
    lines = [line for line in result["output"].splitlines() if line.startswith('{"exit"')]
    if not lines or result["first"] is None:
        tail = "\n".join(result["output"].splitlines()[-15:])
        print(f"  trace ({mode}) failed:\n{tail}", file=sys.stderr, flush=True)
        return None
    result.update(json.loads(lines[-1]))
    result["mode"] = mode
    return result


def run_profile(arrivals: Arrivals, tmp: Path, prefect_env: dict[str, str]) -> Result:
    home = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp))
    prof = tmp / "startup.prof"
    env = child_env(CIVICLAKE_HOME=str(home), CIVICLAKE_SOCRATA_URL=arrivals.url, **prefect_env)
    command = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "civiclake.cli"]
    result = run_command(command + RUN_ARGS, env, arrivals, REPO)
    entries: list[tuple[float, float, int, str]] = []
    if prof.exists():
        stats = pstats.Stats(str(prof))
        result["profile_total"] = stats.total_tt  # type: ignore[attr-defined]
        for (filename, line, func), value in stats.stats.items():  # type: ignore[attr-defined]
            _, calls, tottime, cumulative, _ = value
            if "/civiclake/" not in filename and "/prefect/" not in filename:
                continue
            short = re.sub(r"^.*?/(site-packages|src)/", "", filename)
            entries.append((cumulative, tottime, calls, f"{short}:{line}({func})"))
    entries.sort(reverse=True)
    result["entries"] = entries[:25]
    return result


def run_precheck(home: str) -> Result:
    env = child_env(CIVICLAKE_HOME=home)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--phase", "precheck"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"outcome": f"failed: {done.stderr[-300:]}"}


# ---------------------------------------------------------------- parent: report


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_runs(results: list[Result]) -> None:
    print()
    print(f"{'mode':<11}{'run':<10}{'to first request s':>20}{'CPU s':>8}", end="")
    print(f"{'to flow begin s':>17}{'total s':>10}{'exit':>6}")
    print("-" * 82)
    for r in results:
        run = str(r["run"])
        if r["mode"] == "ephemeral":
            run += " (cold)" if r["run"] == 1 else " (warm)"
        print(
            f"{r['mode']:<11}{run:<10}{fmt(r['first']):>20}{fmt(r['first_cpu']):>8}"
            f"{fmt(r.get('flow_begin')):>17}"
            f"{r['total']:>10.2f}{r['exit']!s:>6}"
        )


def summarize(results: list[Result]) -> None:
    print()
    eph = [r for r in results if r["mode"] == "ephemeral" and r["first"] is not None]
    srv = [r for r in results if r["mode"] == "server" and r["first"] is not None]
    if eph:
        print(f"ephemeral, cold (empty PREFECT_HOME): {eph[0]['first']:.2f} s to first request")
        warm = [r["first"] for r in eph[1:]]
        if warm:
            print(
                f"ephemeral, warm: median {statistics.median(warm):.2f} s "
                f"(min {min(warm):.2f}, max {max(warm):.2f}, {len(warm)} runs)"
            )
    server_runs = [r for r in results if r["mode"] == "server"]
    if server_runs:
        firsts = [r["first"] for r in srv]
        if firsts:
            print(
                f"running server: median {statistics.median(firsts):.2f} s "
                f"(min {min(firsts):.2f}, max {max(firsts):.2f}, {len(firsts)} runs)"
            )
        cpus = [r["first_cpu"] for r in srv if r["first_cpu"] is not None]
        if cpus:
            print(
                f"running server: CPU seconds the command used up to its first request: median "
                f"{statistics.median(cpus):.2f} s (the wall time an idle machine would approach)"
            )
        under = sum(1 for f in firsts if f < TARGET_S)
        ok = under == len(server_runs) and bool(server_runs)
        verdict = "met" if ok else "NOT met"
        print(
            f"target: running server, command start -> first request < {TARGET_S:.0f} s: "
            f"{verdict} ({under} of {len(server_runs)} runs under {TARGET_S:.0f} s)"
        )


def print_imports(imports: Result) -> None:
    print()
    print("imports (a fresh interpreter each, repeats interleaved)")
    print(f"  {'':<46} {'wall s min / max':>17} {'CPU s median':>13}")
    for label, walls in imports["walls"].items():
        cpu = statistics.median(imports["cpus"][label])
        print(f"  {label:<46} {min(walls):7.2f} / {max(walls):6.2f} {cpu:13.2f}")
    full = statistics.median(imports["cpus"][FULL_IMPORTS])
    fetch = statistics.median(imports["cpus"][FETCH_IMPORTS])
    print(
        f"  -> importing pyarrow/pyiceberg (and pandas, via pyarrow.dataset) only inside the "
        f"stage/load tasks would move {full - fetch:.2f} CPU s after the first request"
    )
    print(
        f"  -X importtime: civiclake.flows.bnt {imports['importtime_total']:.2f} s cumulative; "
        "its biggest direct imports (each counts what it imported first):"
    )
    for name, seconds in imports["importtime_children"]:
        print(f"    {name:<40} {seconds:6.2f} s")
    print("  -X importtime, own time summed by top-level package (whoever imported it):")
    for name, seconds in imports["importtime_packages"]:
        print(f"    {name:<40} {seconds:6.2f} s")


def print_trace(trace: Result) -> None:
    first = trace["first"]
    events = trace["events"]
    print()
    print(
        f"traced run ({trace['mode']}): first request at {first:.2f} s, "
        f"total {trace['total']:.2f} s, exit {trace['exit']}"
    )
    segments = trace_breakdown(events, first)
    if segments:
        print("  where the time to the first request goes (consecutive, they add up):")
        print(f"    {'':<52} {'wall s':>7} {'share':>6} {'CPU s':>7}")
        for label, seconds, cpu in segments:
            share = 100 * seconds / first if first else 0
            print(f"    {label:<52} {seconds:7.2f} {share:5.0f}% {cpu:7.2f}")
        total_cpu = sum(cpu for label, _, cpu in segments if not label.startswith("*"))
        harness = sum(wall for label, wall, _ in segments if label.startswith("*"))
        print(f"    {'without the harness':<52} {first - harness:7.2f} {'':>6} {total_cpu:7.2f}")
    body, call = first_event(events, "flow body"), first_event(events, "flow call:")
    if body and call:
        print(
            f"  after the first request: the flow body returns at {body['end']:.2f} s (fetch, "
            f"stage, load, report); the flow call at {call['end']:.2f} s "
            f"(+{call['end'] - body['end']:.2f} s engine teardown: final state, heartbeat "
            f"thread join); the process exits at {trace['total']:.2f} s "
            f"(+{trace['total'] - call['end']:.2f} s: summary, log/event flush, interpreter exit)"
        )
    details = engine_details(events, first)
    if details:
        print("  inside 'flow called -> flow body' and the task engine (durations, may overlap):")
        for label, seconds, cpu in details:
            print(f"    {label:<52} {seconds:7.2f} {'':>6} {cpu:7.2f}")
    calls = api_calls(events, first)
    if calls:
        spent = sum(e["end"] - e["start"] for e in calls)
        main = [e for e in calls if e["thread"] == "MainThread"]
        blocking = sum(e["end"] - e["start"] for e in main)
        print(
            f"  Prefect API requests before the first source request: {len(calls)} "
            f"({spent:.2f} s in all; {len(main)} on the main thread, {blocking:.2f} s blocking)"
        )
        groups: list[list[dict[str, Any]]] = []
        for e in calls:  # consecutive identical requests (health polls) on one line
            if groups and groups[-1][0]["label"] == e["label"]:
                groups[-1].append(e)
            else:
                groups.append([e])
        for group in groups:
            e = group[0]
            took = sum(g["end"] - g["start"] for g in group)
            what = e["label"][14:] + (f" x{len(group)}" if len(group) > 1 else "")
            print(f"    at {e['start']:6.2f} s  {took:5.3f} s  {what:<44} {e['thread']}")


def print_profile(profile: Result) -> None:
    print()
    print(
        f"cProfile of one run against the server: first request at {fmt(profile['first'])} s, "
        f"total {profile['total']:.2f} s (profiling slows Python code down)"
    )
    print(f"  top {len(profile['entries'])} cumulative entries in civiclake/prefect code:")
    print(f"    {'cum s':>7} {'own s':>7} {'calls':>7}  function")
    for cumulative, tottime, calls, where in profile["entries"]:
        print(f"    {cumulative:7.2f} {tottime:7.2f} {calls:7d}  {where}")


def print_precheck(precheck: Result) -> None:
    print()
    print("CLI pre-check of incremental runs (no --start-date), before Prefect is imported:")
    if "catalog_check" not in precheck:
        print(f"  {precheck.get('outcome')}")
        return
    print(f"  import civiclake.cli                      {precheck['import_cli']:6.2f} s")
    print(
        f"  import civiclake.tables + sources.bnt     {precheck['import_tables']:6.2f} s  "
        "(earlier, not extra: the flow imports them too)"
    )
    print(
        f"  catalog open + table check                {precheck['catalog_check']:6.2f} s  "
        f"({precheck['outcome']})"
    )
    print("  the measured runs give --start-date, so they skip this check")


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def temp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="civiclake-startup-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--skip-ephemeral", action="store_true", help="no ephemeral-mode runs")
    parser.add_argument("--skip-server", action="store_true", help="no running-server runs")
    parser.add_argument("--phase", choices=("precheck",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "precheck":
        phase_precheck()
        return 0

    print(
        f"civiclake bnt run startup benchmark: command start -> first Socrata request, "
        f"{args.runs} runs per mode\n"
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Prefect {importlib.metadata.version('prefect')}, "
        f"command: {' '.join(['civiclake', *RUN_ARGS])}\n"
        f"load average (1/5/15 min) at start: {load_average()}",
        flush=True,
    )
    results: list[Result] = []
    traces: list[Result] = []
    profile: Result | None = None
    precheck: Result | None = None
    server_health = None
    server_settle = 0.0
    with temp_root() as tmp, Arrivals() as arrivals:
        print("measuring imports ...", file=sys.stderr, flush=True)
        imports = measure_imports(REPO)
        if not args.skip_ephemeral:
            print("ephemeral mode ...", file=sys.stderr, flush=True)
            eph_home = tmp / "prefect-home-ephemeral"
            eph_home.mkdir()
            eph_env = {"PREFECT_HOME": str(eph_home)}
            results += run_mode("ephemeral", args.runs, arrivals, tmp, eph_env)
            trace = run_trace("ephemeral, warm", arrivals, tmp, eph_env)
            if trace:
                traces.append(trace)
        if not args.skip_server:
            print("running server mode ...", file=sys.stderr, flush=True)
            server_home = tmp / "prefect-home-server"
            client_home = tmp / "prefect-home-client"
            server_home.mkdir()
            client_home.mkdir()
            proc, api_url, server_health = start_prefect_server(server_home, REPO)
            try:
                server_settle = wait_until_idle(proc.pid)
                srv_env = {"PREFECT_HOME": str(client_home), "PREFECT_API_URL": api_url}
                server_results = run_mode("server", args.runs, arrivals, tmp, srv_env)
                results += server_results
                trace = run_trace("server", arrivals, tmp, srv_env)
                if trace:
                    traces.append(trace)
                print("cProfile run ...", file=sys.stderr, flush=True)
                profile = run_profile(arrivals, tmp, srv_env)
                loaded = [r for r in server_results if r["exit"] == 0]
                if loaded:
                    precheck = run_precheck(loaded[-1]["home"])
            finally:
                stop_prefect_server(proc)

    print(f"load average (1/5/15 min) at end: {load_average()}")
    if server_health is not None:
        print(
            f"prefect server start -> /api/health true: {server_health:.1f} s (once), then "
            f"{server_settle:.1f} s until it idled (< 15 % of a core) before the runs"
        )
    print_runs(results)
    summarize(results)
    print_imports(imports)
    for trace in traces:
        print_trace(trace)
    if profile:
        print_profile(profile)
    if precheck:
        print_precheck(precheck)
    return 0


if __name__ == "__main__":
    sys.exit(main())
