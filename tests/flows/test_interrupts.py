"""Ctrl-C and SIGKILL of a real ``civiclake`` process, as a user's terminal sends them.

The CLI runs as its own process (ephemeral Prefect, as a user runs it) against the local
Socrata replay server, whose first data page is held back so the signal lands mid-fetch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from civiclake import tables
from civiclake.config import get_settings
from civiclake.testing.socrata import Fault, SocrataServer
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows
from testsupport.files import FileServer

TABLE = "socrata.abcd_1234"
SAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "bnt_sample.csv"
STARTUP_BOUND = 240.0  # a cold temporary Prefect server on a busy 2-core machine
STOP_BOUND = 30.0  # "within seconds", with room for a loaded machine


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the module's CLI processes: warm after the first."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture
def slow_server() -> Iterator[SocrataServer]:
    """A dataset whose data pages answer only after two minutes: a fetch in progress."""
    server = SocrataServer()
    server.add_dataset(DATASET, sample_rows(25), columns=COLUMNS, name="Every type")
    server.inject(Fault.SLOW, times=50, delay=120.0, only="data")
    with server:
        yield server


def cli_env(home: Path, prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "CIVICLAKE_HOME": str(home),
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "COLUMNS": "200",
            "CIVICLAKE_HTTP_TIMEOUT": "300",  # the held-back page must not time out
            **extra,
        }
    )
    return env


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The CLI as a terminal's foreground job: its own process group, which it leads."""
    return subprocess.Popen(
        [sys.executable, "-m", "civiclake.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_fetch(server: SocrataServer | FileServer, process: subprocess.Popen[str]) -> None:
    """Until the CLI has asked for a data page or a file (the fetch is under way)."""
    deadline = time.monotonic() + STARTUP_BOUND
    while not (
        server.max_in_flight > 0
        if isinstance(server, FileServer)
        else any("$limit" in r.params for r in server.requests)
    ):
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the CLI ended before fetching: {process.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the CLI never started fetching")
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def prefect_server_of(pid: int, bound: float = 60.0) -> int:
    """The temporary Prefect server the CLI ``pid`` started (waited for: a B&T run's fetch
    begins before Prefect is imported, so its first request comes before the server)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        for child in children(pid):
            try:
                command = (Path("/proc") / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            if b"prefect.server.api.server:create_app" in command:
                return child
        time.sleep(0.2)
    pytest.fail(f"no temporary Prefect server among the children of {pid}")


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left to collect


def wait_gone(pid: int, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def cleanup(process: subprocess.Popen[str], server_pid: int | None) -> None:
    """Whatever a failing test left running: the CLI, and a server it orphaned."""
    if process.poll() is None:
        process.kill()
    if server_pid is not None and alive(server_pid):
        os.kill(server_pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [True, False], ids=["process-group", "main-process"])
def test_ctrl_c_mid_fetch_stops_at_once_commits_nothing_and_stops_the_server(
    to_group: bool, slow_server: SocrataServer, civiclake_home: Path, prefect_home: Path
) -> None:
    env = cli_env(civiclake_home, prefect_home, CIVICLAKE_SOCRATA_URL=slow_server.url)
    process = start_cli(env, "socrata", "run", DATASET)
    server_pid = None
    try:
        wait_for_fetch(slow_server, process)
        server_pid = prefect_server_of(process.pid)
        if to_group:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=STOP_BOUND)
    finally:
        cleanup(process, server_pid)
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted: nothing committed"
    assert "Traceback" not in out + err
    assert wait_gone(server_pid, STOP_BOUND), "the temporary Prefect server is still running"
    assert not tables.load_catalog(get_settings()).table_exists(TABLE)


@pytest.mark.slow
def test_sigkill_of_the_cli_leaves_no_prefect_server(
    slow_server: SocrataServer, civiclake_home: Path, prefect_home: Path
) -> None:
    env = cli_env(civiclake_home, prefect_home, CIVICLAKE_SOCRATA_URL=slow_server.url)
    process = start_cli(env, "socrata", "run", DATASET)
    server_pid = None
    try:
        wait_for_fetch(slow_server, process)
        server_pid = prefect_server_of(process.pid)
        process.kill()
        process.wait()  # (not communicate: an orphaned server would hold its pipes open)
        assert wait_gone(server_pid, STOP_BOUND), "SIGKILL of the CLI orphaned its server"
    finally:
        cleanup(process, server_pid)


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from civiclake.config import get_settings
    from civiclake.flows._locks import table_lock
    with table_lock(sys.argv[1], get_settings()):
        print("held", flush=True)
        time.sleep(600)
    """
)


def hold_lock(env: dict[str, str], table: str) -> subprocess.Popen[str]:
    """A real process holding ``table``'s lock (as a load does during its commit)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, table], env=env, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_a_load_killed_holding_the_lock_does_not_block_the_next_load(
    civiclake_home: Path, prefect_home: Path
) -> None:
    env = cli_env(civiclake_home, prefect_home, CIVICLAKE_LOCK_TIMEOUT="20")
    holder = hold_lock(env, "mta.bnt_traffic_hourly")
    holder.kill()  # SIGKILL: no cleanup of any kind runs
    holder.wait()
    done = subprocess.run(
        [sys.executable, "-m", "civiclake.cli", "bnt", "run", "--from-file", str(SAMPLE_CSV)],
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_BOUND + 120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6,720" in done.stdout
    assert "waiting for the lock" not in done.stdout + done.stderr


COMMIT_INTERRUPTED = textwrap.dedent(
    """
    import os, signal, time
    from datetime import UTC, date, datetime
    import pyarrow as pa
    from civiclake import interrupts, tables
    from civiclake.config import get_settings
    from civiclake.flows._locks import table_lock
    from civiclake.sources import bnt

    interrupts.install()
    settings = get_settings()
    catalog = tables.load_catalog(settings)
    table = tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)
    row = {
        "plaza_id": 21, "facility": bnt.PLAZA_FACILITIES[21], "date": date(2024, 3, 1),
        "hour": 1, "direction": "I", "vehicles_e_zpass": 10, "vehicles_vtoll": 1,
        "load_run_id": "r1", "load_source": "test", "loaded_at": datetime.now(UTC),
    }
    data = pa.Table.from_pylist([row], schema=bnt.ARROW_SCHEMA)
    window = bnt.LoadRange(date(2024, 3, 1), date(2024, 3, 2)).table_filter()
    with table_lock(bnt.TABLE, settings):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C just as the commit starts
        time.sleep(0.5)
        tables.replace_range(table, window, lambda: [data], {"run-id": "r1"})
        print("committed", flush=True)
    print("went on after the commit", flush=True)
    """
)


def test_ctrl_c_during_a_commit_lets_it_finish_and_names_the_snapshot(
    civiclake_home: Path,
) -> None:
    # a long-running server is named: no temporary one to guard (and none is contacted)
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = subprocess.run(
        [sys.executable, "-c", COMMIT_INTERRUPTED],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    table = tables.load_catalog(get_settings()).load_table("mta.bnt_traffic_hourly")
    snapshot = table.current_snapshot()
    assert snapshot is not None and table.scan().to_arrow().num_rows == 1
    assert done.returncode == 130, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["committed"]
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted: committed snapshot {snapshot.snapshot_id}"
    )
    assert "Traceback" not in done.stderr


def _preload_bnt() -> int:
    """Rows for 2024-03-01 and 02 in mta.bnt_traffic_hourly; returns the snapshot id."""
    from datetime import UTC, date, datetime

    import pyarrow as pa

    from civiclake.sources import bnt

    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)
    rows = [
        {
            "plaza_id": 21,
            "facility": bnt.PLAZA_FACILITIES[21],
            "date": date(2024, 3, d),
            "hour": 1,
            "direction": "I",
            "vehicles_e_zpass": 10 * d,
            "vehicles_vtoll": 1,
            "load_run_id": "r1",
            "load_source": "test",
            "loaded_at": datetime.now(UTC),
        }
        for d in (1, 2)
    ]
    window = bnt.LoadRange(date(2024, 3, 1), date(2024, 3, 3)).table_filter()
    data = pa.Table.from_pylist(rows, schema=bnt.ARROW_SCHEMA)
    result = tables.replace_range(table, window, lambda: [data], {"run-id": "r1"})
    assert result.snapshot_id is not None
    return result.snapshot_id


@pytest.mark.slow
def test_ctrl_c_mid_fetch_of_bnt_leaves_the_table_as_it_was(
    civiclake_home: Path, prefect_home: Path
) -> None:
    from datetime import date

    from civiclake.testing.socrata import bnt_rows

    before = _preload_bnt()
    server = SocrataServer({"qzve-kjga": bnt_rows(date(2024, 3, 1), 2)})
    server.inject(Fault.SLOW, times=50, delay=120.0, only="data")
    with server:
        env = cli_env(civiclake_home, prefect_home, CIVICLAKE_SOCRATA_URL=server.url)
        args = ("bnt", "run", "--start-date", "2024-03-01", "--stop-date", "2024-03-03")
        process = start_cli(env, *args)
        server_pid = None
        try:
            wait_for_fetch(server, process)
            server_pid = prefect_server_of(process.pid)
            os.killpg(process.pid, signal.SIGINT)
            out, err = process.communicate(timeout=STOP_BOUND)
        finally:
            cleanup(process, server_pid)
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted: nothing committed"
    assert "Traceback" not in out + err
    table = tables.load_catalog(get_settings()).load_table("mta.bnt_traffic_hourly")
    assert table.current_snapshot().snapshot_id == before
    assert table.scan().to_arrow().num_rows == 2


@pytest.mark.slow
def test_ctrl_c_mid_download_of_taxi_run(
    tmp_path: Path, civiclake_home: Path, prefect_home: Path
) -> None:
    with FileServer(tmp_path) as mirror:
        mirror.gather(99, timeout=120.0)  # every answer held back: a download in progress
        env = cli_env(civiclake_home, prefect_home, CIVICLAKE_TLC_URL=mirror.url)
        process = start_cli(
            env, "taxi", "run", "--color", "green", "--year", "2020", "--months", "10"
        )
        server_pid = None
        try:
            wait_for_fetch(mirror, process)
            server_pid = prefect_server_of(process.pid)
            os.killpg(process.pid, signal.SIGINT)
            out, err = process.communicate(timeout=STOP_BOUND)
        finally:
            cleanup(process, server_pid)
            mirror.clear()
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted: nothing committed"
    assert "Traceback" not in out + err
    assert not tables.load_catalog(get_settings()).table_exists("tlc.green_trips")
