"""``civiclake server start|stop|status`` and run commands reusing it: real processes only.

Each test runs the real ``civiclake`` command in subprocesses with its own CIVICLAKE_HOME (so its
own server state) and no Prefect settings of the developer's. Every server a test starts is
stopped at the end, even when an assertion failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from civiclake._private import local_server

SAMPLE_CSV = Path(__file__).resolve().parents[1] / "examples" / "bnt_sample.csv"
FLOW_NAME = "bnt-hourly-traffic"


def _env(home: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CIVICLAKE_"))}
    env.update(
        CIVICLAKE_HOME=str(home),
        PREFECT_HOME=str(tmp_path / "client-prefect-home"),  # no profile of the developer's
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def civiclake(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "civiclake.cli", *args],
        env=env,
        capture_output=True,  # would hang if the background server kept the CLI's pipes
        text=True,
        timeout=timeout,
    )


def _state(home: Path) -> dict[str, int]:
    return json.loads((home / "server" / "server.json").read_text())


def _alive(pid: int) -> bool:
    return local_server._alive(pid)


@pytest.fixture
def home(civiclake_home: Path) -> Iterator[Path]:
    """The test's CIVICLAKE_HOME; whatever server runs from it is stopped afterwards."""
    yield civiclake_home
    state = local_server._read_state(local_server.state_dir(civiclake_home))
    local_server.stop(civiclake_home)
    if state is not None and _alive(state.pid) and local_server._is_ours(state):
        os.killpg(state.pid, signal.SIGKILL)


def _flow_runs(api_url: str) -> list[dict[str, object]]:
    """Flow runs of the B&T flow the server knows, through its REST API."""
    body = {"flows": {"name": {"any_": [FLOW_NAME]}}}
    answer = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30)
    answer.raise_for_status()
    return list(answer.json())


def _logs(api_url: str, flow_run_id: str) -> list[dict[str, object]]:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    answer = httpx.post(f"{api_url}/logs/filter", json=body, timeout=30)
    answer.raise_for_status()
    return list(answer.json())


def _run_id(stdout: str) -> str:
    for line in stdout.splitlines():
        if "run id" in line:
            return line.replace("│", " ").split()[-1]
    raise AssertionError(f"no run id in: {stdout}")


@pytest.mark.slow
def test_a_run_starts_the_server_the_next_runs_reuse_it_and_stop_ends_it(
    home: Path, tmp_path: Path
) -> None:
    env = _env(home, tmp_path)
    not_yet = civiclake(env, "server", "status")
    assert not_yet.returncode == 3 and not_yet.stdout.startswith("not running")

    first = civiclake(env, "bnt", "run", "--from-file", str(SAMPLE_CSV))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Prefect: started the civiclake server at http://127.0.0.1:" in first.stderr
    assert "CIVICLAKE_SERVER_AUTOSTART=0" in first.stderr
    assert "Starting temporary server" not in first.stdout + first.stderr
    state = _state(home)
    pid, port = state["pid"], state["port"]
    assert _alive(pid), "the server outlives the command that started it"

    status = civiclake(env, "server", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith(f"running: url http://127.0.0.1:{port}, pid {pid}, uptime ")

    # the second run reuses it, even with auto-start off
    second = civiclake(
        env | {"CIVICLAKE_SERVER_AUTOSTART": "0"}, "bnt", "run", "--from-file", str(SAMPLE_CSV)
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Prefect: the civiclake server at http://127.0.0.1:{port} (pid {pid})" in second.stderr
    assert "Starting temporary server" not in second.stdout + second.stderr
    assert _state(home)["pid"] == pid

    # both flow runs are on that server, completed, with the run ids the summaries printed
    # and their logs, to the last line (shipped at exit: civiclake._private.fast_exit keeps that)
    runs = {str(r["id"]): r for r in _flow_runs(f"http://127.0.0.1:{port}/api")}
    for done in (first, second):
        run_id = _run_id(done.stdout)
        assert runs[run_id]["state_type"] == "COMPLETED"
        messages = [str(log["message"]) for log in _logs(f"http://127.0.0.1:{port}/api", run_id)]
        assert any("Beginning flow run" in m for m in messages), messages
        assert any(m.startswith("Finished in state Completed") for m in messages), messages

    again = civiclake(env, "server", "start")
    assert again.returncode == 0
    assert again.stdout.startswith(f"already running: http://127.0.0.1:{port}")
    assert f"pid {pid}" in again.stdout

    # an explicit PREFECT_API_URL wins over the running civiclake server
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    explicit = civiclake(
        env | {"PREFECT_API_URL": dead}, "bnt", "run", "--from-file", str(SAMPLE_CSV)
    )
    assert explicit.returncode == 1
    assert f"cannot reach the Prefect server at PREFECT_API_URL={dead}" in explicit.stderr
    assert "civiclake server at" not in explicit.stderr

    stopped = civiclake(env, "server", "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"stopped (pid {pid})"
    assert not _alive(pid)
    assert not (home / "server" / "server.json").exists()
    stopped_again = civiclake(env, "server", "stop")
    assert stopped_again.returncode == 0 and stopped_again.stdout.strip() == "not running"
    after = civiclake(env, "server", "status")
    assert after.returncode == 3 and after.stdout.startswith("not running")

    # started again by hand: the remembered port, the runs' history kept (its own database)
    restarted = civiclake(env, "server", "start")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.startswith(f"started: http://127.0.0.1:{port} ")
    assert len(_flow_runs(f"http://127.0.0.1:{port}/api")) == len(runs)


def test_start_on_a_taken_port_is_one_line_and_leaves_nothing(home: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = civiclake(_env(home, tmp_path), "server", "start", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use: stop what listens there or choose another "
        "port (civiclake server start --port N)"
    ]
    assert not (home / "server" / "server.json").exists()


def _processes_in(folder: Path) -> list[int]:
    """Pids whose working directory is ``folder`` (the server runs in its state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_server_that_does_not_come_up_in_time_is_stopped_with_one_line(
    home: Path, tmp_path: Path
) -> None:
    done = civiclake(_env(home, tmp_path), "server", "start", "--timeout", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: the Prefect server did not come up on 127.0.0.1:")
    assert "within 1 s" in lines[0] and "CIVICLAKE_SERVER_START_TIMEOUT" in lines[0]
    assert not (home / "server" / "server.json").exists()
    folder = local_server.state_dir(home).resolve()
    deadline = time.monotonic() + 10  # uvicorn's children end with it
    while _processes_in(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_in(folder) == []


def test_status_and_stop_with_a_stale_pid_file(home: Path, tmp_path: Path) -> None:
    env = _env(home, tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = home / "server"
    folder.mkdir(parents=True)
    state = {"pid": gone.pid, "port": 1, "started_at": time.time()}
    (folder / "server.json").write_text(json.dumps(state))
    status = civiclake(env, "server", "status")
    assert status.returncode == 3
    assert status.stdout.startswith(
        f"not running (removed a stale pid file: pid {gone.pid} is gone)"
    )
    assert not (folder / "server.json").exists()

    # a pid file whose pid now belongs to another program: reported stale, that program spared
    other = subprocess.Popen(["sleep", "60"])
    try:
        (folder / "server.json").write_text(json.dumps(state | {"pid": other.pid}))
        assert civiclake(env, "server", "stop").stdout.strip() == "not running"
        assert other.poll() is None
        assert not (folder / "server.json").exists()
    finally:
        other.kill()
        other.wait()


def test_run_commands_without_a_server_and_autostart_off_keep_the_temporary_server(
    home: Path,
) -> None:
    """What the hook decides (the temporary-server run itself: tests/flows/test_ephemeral.py)."""
    os.environ.pop("PREFECT_API_URL", None)
    assert os.environ["CIVICLAKE_SERVER_AUTOSTART"] == "0"  # tests/conftest.py
    code = (
        "import os, sys; from civiclake._private import local_server; from pathlib import Path;"
        "line = local_server.use_for_run(Path(sys.argv[1]));"
        "print(line, os.environ.get('PREFECT_API_URL'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home / "client")
    done = subprocess.run(
        [sys.executable, "-c", code, str(home)], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "None None"
    assert not (home / "server").exists() or not (home / "server" / "server.json").exists()


def test_an_api_url_in_the_active_prefect_profile_counts_as_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert local_server.configured_api_url() is None
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.example:4200/api"\n'
        "[profiles.ephemeral]\n"
    )
    assert local_server.configured_api_url() == "http://prefect.example:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert local_server.configured_api_url() is None


@pytest.mark.slow
def test_ctrl_c_of_a_run_that_started_the_server_leaves_the_server_running(
    home: Path, tmp_path: Path
) -> None:
    """The server a run started is that run's child, but in its own session: the terminal's
    Ctrl-C (SIGINT to the run's process group) ends the run, never the long-lived server."""
    from civiclake.testing.socrata import Fault, SocrataServer
    from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows

    source = SocrataServer()
    source.add_dataset(DATASET, sample_rows(25), columns=COLUMNS, name="Every type")
    source.inject(Fault.SLOW, times=50, delay=120.0, only="data")  # a fetch in progress
    env = _env(home, tmp_path, CIVICLAKE_SOCRATA_URL="", CIVICLAKE_HTTP_TIMEOUT="300")
    with source:
        env["CIVICLAKE_SOCRATA_URL"] = source.url
        process = subprocess.Popen(
            [sys.executable, "-m", "civiclake.cli", "socrata", "run", DATASET],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a terminal's foreground job
        )
        try:
            deadline = time.monotonic() + 300
            while not any("$limit" in r.params for r in source.requests):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the run never started fetching"
                time.sleep(0.2)
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            _, err = process.communicate(timeout=60)  # the server holds none of its pipes
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 130, err[-3000:]
    assert "Prefect: started the civiclake server" in err
    assert err.strip().splitlines()[-1] == "interrupted: nothing committed"
    status = civiclake(env, "server", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith(f"running: url http://127.0.0.1:{_state(home)['port']}")


def test_two_starts_at_once_start_one_server(home: Path, tmp_path: Path) -> None:
    """Two runs auto-starting together (or two `server start`) queue on a lock: one server."""
    env = _env(home, tmp_path)
    command = [sys.executable, "-m", "civiclake.cli", "server", "start"]
    both = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(p.communicate(timeout=300)[0] for p in both)
    assert [p.returncode for p in both] == [0, 0]
    pid = _state(home)["pid"]
    assert outputs[0].startswith("already running: ") and outputs[1].startswith("started: ")
    assert all(f"pid {pid};" in o for o in outputs)
