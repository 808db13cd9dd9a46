"""``civiclake server``: one long-lived local Prefect server the CLI starts once and reuses.

Without ``PREFECT_API_URL`` every run command started Prefect's temporary server: 8-15 s
before the flow begins, on every run (../shared/env-facts.md). This module keeps one server up
in the background instead, under the civiclake home, and lets the run commands use it:

- state in ``$CIVICLAKE_HOME/server/``: ``server.json`` (the pid file: pid, port, start time),
  ``port`` (remembered for the next start), ``server.log`` and ``prefect/`` (the server's own
  ``PREFECT_HOME``: its SQLite database, apart from the user's ``~/.prefect``);
- the server is Prefect's API + UI app under uvicorn (what ``prefect server start
  --background`` runs), launched detached here: its own session (a terminal's Ctrl-C or hangup
  does not reach it), output to the log file (Prefect's ``--background`` pipes it to nobody),
  bound to 127.0.0.1 only, with a health check and a timeout;
- a run command (:func:`use_for_run`) uses it when it is running and no Prefect API URL is
  configured; it starts it first unless ``CIVICLAKE_SERVER_AUTOSTART=0``. An explicit
  ``PREFECT_API_URL`` (environment or active Prefect profile) always wins.

Nothing here imports Prefect: ``start``/``stop``/``status`` cost no Prefect import.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from civiclake.errors import CivicLakeError

HOST = "127.0.0.1"
STATE_DIR = "server"
STATE_FILE = "server.json"
PORT_FILE = "port"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
PREFECT_HOME_DIR = "prefect"
APP = "prefect.server.api.server:create_app"
AUTOSTART_ENV = "CIVICLAKE_SERVER_AUTOSTART"
TIMEOUT_ENV = "CIVICLAKE_SERVER_START_TIMEOUT"
DEFAULT_TIMEOUT = 120.0  # a fresh home (database created and migrated) took 15-27 s here
STOP_GRACE = 15.0
POLL = 0.2
BIND_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
OFF = ("0", "false", "no", "off")
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


@dataclass(frozen=True)
class ServerState:
    """What ``server.json`` holds about the running server."""

    pid: int
    port: int
    started_at: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """What ``PREFECT_API_URL`` is for clients of this server."""
        return f"{self.url}/api"

    def uptime(self) -> str:
        seconds = max(0, int(time.time() - self.started_at))
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        clock = f"{hours:d}:{minutes:02d}:{seconds:02d}"
        return f"{days}d {clock}" if days else clock


@dataclass(frozen=True)
class Status:
    """``state`` is ``running``, ``not running`` or ``not answering`` (alive, health fails);
    ``stale`` is the pid of a pid file whose process was gone (the file is removed)."""

    state: str
    server: ServerState | None = None
    stale: int | None = None


def state_dir(home: Path) -> Path:
    return home / STATE_DIR


# ---------------------------------------------------------------- state


def _read_state(folder: Path) -> ServerState | None:
    try:
        data = json.loads((folder / STATE_FILE).read_text())
        return ServerState(int(data["pid"]), int(data["port"]), float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(folder: Path, state: ServerState) -> None:
    temp = folder / f".{STATE_FILE}.tmp"
    temp.write_text(json.dumps(asdict(state)) + "\n")
    temp.replace(folder / STATE_FILE)
    (folder / PORT_FILE).write_text(f"{state.port}\n")


def _remembered_port(folder: Path) -> int | None:
    try:
        return int((folder / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One start or stop at a time (two runs auto-starting together start one server)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_ours(state: ServerState) -> bool:
    """The pid is alive and still our server (not a pid reused by another program)."""
    if not _alive(state.pid):
        return False
    try:
        args = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid (the health check follows)
    return APP.encode() in args and str(state.port).encode() in args


def _healthy(state: ServerState, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{state.api_url}/health", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _port_free(port: int) -> bool:
    """Nothing listens there (connections of a stopped server in TIME_WAIT do not count:
    uvicorn binds with SO_REUSEADDR too)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _server_env(folder: Path, port: int) -> dict[str, str]:
    """The user's environment (their Prefect server settings included), pointed at our home
    and port; never a client of another server."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    # table-lock leases (civiclake.flows._locks) survive a restart of this server
    env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", LEASE_STORAGE)
    api_url = f"http://{HOST}:{port}/api"
    env.update(
        {
            "PREFECT_HOME": str(folder / PREFECT_HOME_DIR),
            "PREFECT_SERVER_API_HOST": HOST,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": api_url,  # the UI calls this port, not the default 4200
            "PREFECT__SERVER_FINAL": "1",
        }
    )
    return env


def _spawn(folder: Path, port: int) -> subprocess.Popen[bytes]:
    log = folder / LOG_FILE
    if log.exists() and log.stat().st_size:
        log.replace(folder / f"{LOG_FILE}.1")  # the last start's log, for a crash post-mortem
    (folder / PREFECT_HOME_DIR).mkdir(parents=True, exist_ok=True)
    app_dir = _prefect_parent()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory", APP]
    command += ["--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning"]
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=folder,
            env=_server_env(folder, port),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # long-lived: no terminal signal reaches it; pgid == pid
        )


def _prefect_parent() -> str:
    """The folder holding the ``prefect`` package, found without importing Prefect."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise CivicLakeError("Prefect is not installed: pip install civiclake")
    return str(Path(spec.origin).parent.parent)


def _terminate(pid: int, grace: float = STOP_GRACE) -> None:
    """SIGTERM the server's process group (uvicorn shuts down), SIGKILL it after ``grace``."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return
    kill = os.killpg if group == pid else os.kill  # our launch made it a group leader
    with contextlib.suppress(ProcessLookupError):
        kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(POLL)


def _log_tail(folder: Path) -> str:
    try:
        lines = [x.strip() for x in (folder / LOG_FILE).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [x for x in lines if x]
    return lines[-1][:300] if lines else ""


# ---------------------------------------------------------------- the commands


def status(home: Path) -> Status:
    """Whether our server runs; a stale pid file (its process gone) is removed."""
    folder = state_dir(home)
    state = _read_state(folder)
    if state is None:
        return Status("not running")
    if not _is_ours(state):
        with contextlib.suppress(OSError):
            (folder / STATE_FILE).unlink()
        return Status("not running", stale=state.pid)
    if not _healthy(state):
        return Status("not answering", state)
    return Status("running", state)


def start(home: Path, port: int | None = None, timeout: float | None = None) -> tuple[Status, bool]:
    """Start the server unless it runs; (its status, whether this call started it).

    ``port``: that port or an error when it is taken; default the remembered port when it
    is free, else any free port. Raises :class:`CivicLakeError` when it does not come up
    within ``timeout`` seconds (the process is stopped then, nothing is left running).
    """
    folder = state_dir(home)
    wait = timeout if timeout is not None else start_timeout()
    with _locked(folder):
        current = status(home)
        if current.state == "running":
            return current, False
        if current.state == "not answering":
            assert current.server is not None
            raise CivicLakeError(
                f"the civiclake Prefect server (pid {current.server.pid}) does not answer at "
                f"{current.server.url}: stop it (civiclake server stop), then start it again"
            )
        if port is not None and not _port_free(port):
            raise CivicLakeError(
                f"port {port} on {HOST} is in use: stop what listens there or choose another "
                "port (civiclake server start --port N)"
            )
        remembered = _remembered_port(folder)
        for attempt in range(1, BIND_ATTEMPTS + 1):
            chosen = port
            if chosen is None:
                first = attempt == 1 and remembered and _port_free(remembered)
                chosen = remembered if first and remembered else _free_port()
            state = _launch(folder, chosen, wait)
            if state is not None:
                return Status("running", state), True
            if port is not None or attempt == BIND_ATTEMPTS or _port_free(chosen):
                break  # not a lost race for the port: report it
        raise CivicLakeError(
            f"the Prefect server did not come up on {HOST}:{chosen} within {wait:.0f} s"
            f" (log {folder / LOG_FILE}: {_log_tail(folder) or 'empty'}); "
            f"a slow machine may need {TIMEOUT_ENV}=300"
        )


def _launch(folder: Path, port: int, timeout: float) -> ServerState | None:
    """Spawn and wait for ``/api/health``; None (and nothing left running) when it fails."""
    process = _spawn(folder, port)
    state = ServerState(process.pid, port, time.time())
    _write_state(folder, state)  # a stop during the wait finds it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _healthy(state, timeout=1.0):
            return state
        time.sleep(POLL)
    _terminate(process.pid, grace=5.0)
    with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
        process.wait(timeout=5)
    with contextlib.suppress(OSError):
        (folder / STATE_FILE).unlink()
    return None


def stop(home: Path) -> Status:
    """Stop the server (idempotent): the status it had; the pid file is removed."""
    folder = state_dir(home)
    with _locked(folder):
        current = status(home)
        if current.server is not None:
            _terminate(current.server.pid)
        with contextlib.suppress(OSError):
            (folder / STATE_FILE).unlink()
    return current


def start_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        from civiclake.errors import ParameterError

        raise ParameterError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


# ---------------------------------------------------------------- run commands


def configured_api_url() -> str | None:
    """A Prefect API URL the user configured: ``PREFECT_API_URL`` or the active profile's."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    profile = data.get("profiles", {}).get(active, {})
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return str(url) if url else None


def autostart() -> bool:
    return os.environ.get(AUTOSTART_ENV, "").strip().lower() not in OFF


def use_for_run(home: Path) -> str | None:
    """Point this process's Prefect at the civiclake server (started now unless opted out);
    the line to show the user, or None when the run keeps today's temporary server.

    Only before Prefect is imported (its settings are read then) and only when no Prefect
    API URL is configured.
    """
    if "prefect" in sys.modules or configured_api_url():
        return None
    current = status(home)
    if current.state == "running" and current.server is not None:
        os.environ["PREFECT_API_URL"] = current.server.api_url
        return (
            f"Prefect: the civiclake server at {current.server.url} (pid {current.server.pid}); "
            "civiclake server stop stops it"
        )
    if not autostart():
        return None
    try:
        now, _ = start(home)
    except CivicLakeError as exc:
        return f"warning: {exc}; this run uses a temporary Prefect server"
    assert now.server is not None
    os.environ["PREFECT_API_URL"] = now.server.api_url
    return (
        f"Prefect: started the civiclake server at {now.server.url} (pid {now.server.pid}), "
        "kept running for the next runs; civiclake server stop stops it, "
        f"{AUTOSTART_ENV}=0 (and a stop) runs each command on a temporary server instead"
    )
