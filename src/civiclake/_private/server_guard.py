"""Prefect's temporary server must not outlive the command that started it.

Prefect starts it as a plain child (``SubprocessASGIServer``) and stops it from ``atexit``:
a SIGKILL of the CLI skipped that and left a 200 MB server adopted by init. And in the
terminal's process group it received the user's Ctrl-C too, and died under the still running
flow. :func:`install` makes Prefect start it through this module instead:

- in its own session (a Ctrl-C to the terminal reaches the CLI only, which then stops it), and
- with a watchdog thread that ends the server as soon as its parent process is gone, however
  the parent died (its parent pid changes when it is re-parented). ``PR_SET_PDEATHSIG`` was
  not used: it fires when the *thread* that started the child ends, and Prefect may start the
  server from a short-lived thread.

Run as ``python -m civiclake._private.server_guard PARENT_PID UVICORN_ARGS...``.
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from typing import Any

WATCH_SECONDS = 0.5
GRACE_SECONDS = 5.0


def install() -> None:
    """Start Prefect's temporary server through this module (only when Prefect would start
    one: no ``PREFECT_API_URL``)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    importlib.import_module("civiclake.flows")  # Prefect's offline defaults, before Prefect
    server = importlib.import_module("prefect.server.api.server")
    server.SubprocessASGIServer._run_uvicorn_command = _guarded_command


def _guarded_command(self: Any) -> subprocess.Popen[Any]:
    """Prefect 3.8's ``SubprocessASGIServer._run_uvicorn_command``, started through the guard
    in its own session (same arguments and environment)."""
    import prefect
    from prefect.settings import get_current_settings

    server_env = {
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    return subprocess.Popen(
        args=[
            sys.executable,
            "-m",
            "civiclake._private.server_guard",
            str(os.getpid()),
            "--app-dir",
            str(prefect.__module_path__.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env={
            **os.environ,
            **server_env,
            **get_current_settings().to_environment_variables(exclude_unset=True),
        },
        start_new_session=True,
    )


def stop_servers() -> None:
    """Stop the temporary servers this process started (an interrupted run ends with this)."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:
        return
    for instance in list(module.SubprocessASGIServer._instances.values()):
        process = instance.server_process
        if process is None:
            continue
        process.terminate()
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        instance.server_process = None


def _watch(parent: int) -> None:
    """End this server when ``parent`` is gone: SIGTERM (uvicorn shuts down), then exit."""
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os._exit(1)


def main() -> None:
    parent = int(sys.argv[1])
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
    sys.argv = ["uvicorn", *sys.argv[2:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
