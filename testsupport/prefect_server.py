"""A real ``prefect server start`` process for tests that need more than one Prefect client.

``prefect_test_harness`` runs the API inside the test process: a worker subprocess, the
``prefect`` CLI or a browser cannot reach it. This starts the actual server (API and UI) as its
own process, bound to 127.0.0.1 only, with a throw-away ``PREFECT_HOME`` (its own SQLite
database), and hands out the environment a client, worker or CLI call needs to talk to it.

``with PrefectServer() as server: subprocess.run([...], env=server.env())``, or run
``python -m testsupport.prefect_server`` to keep one up by hand.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Self

import httpx

from testsupport._process import (
    Service,
    free_port,
    log_tail,
    serve_until_interrupted,
    stop_process_group,
)

__all__ = ["PrefectServer", "main"]

HOST = "127.0.0.1"
SERVER_COMMAND = (sys.executable, "-m", "prefect", "server", "start")
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


class PrefectServer(Service):
    """One Prefect server process (API + UI) with its own home; stopped and deleted on exit."""

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | Path | None = None,
        timeout: float = 120.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port
        self.base_dir = base_dir
        self.timeout = timeout
        self.extra_env = dict(extra_env or {})
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses and environment ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the server's root (the UI is served there)."""
        if self.port is None or self.dir is None:
            raise RuntimeError("the Prefect server is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """What ``PREFECT_API_URL`` must be for clients of this server."""
        return f"{self.url}/api"

    @property
    def ui_url(self) -> str:
        return self.url

    @property
    def home(self) -> Path:
        """The server's ``PREFECT_HOME`` (clients share it: profiles, local result storage)."""
        if self.dir is None:
            raise RuntimeError("the Prefect server is not started")
        return self.dir / "home"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, for diagnosing a failed start."""
        if self.dir is None:
            raise RuntimeError("the Prefect server is not started")
        return self.dir / "server.log"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) pointed at this server.

        A client given this env never starts an ephemeral server and reports no telemetry.
        """
        env = dict(os.environ if base is None else base)
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
            }
        )
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until ``/api/health`` answers; undone on failure."""
        if self.dir is not None:
            return self
        self.dir = Path(tempfile.mkdtemp(prefix="civiclake-prefect-", dir=self.base_dir))
        self.home.mkdir()
        atexit.register(self.stop)  # a test run that ends abruptly leaves no server behind
        try:
            fixed_port = self.port
            for attempt in range(1, START_ATTEMPTS + 1):
                self.port = fixed_port or free_port()
                self._spawn()
                if self._wait_healthy():
                    return self
                if fixed_port is not None or attempt == START_ATTEMPTS or not self._port_taken():
                    raise RuntimeError(
                        f"the Prefect server did not become healthy within {self.timeout:.0f} s"
                        f" (port {self.port}); log tail:\n{self.log_tail()}"
                    )
                self._terminate()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        assert self.dir is not None and self.port is not None
        env = self.env()
        env.pop("PREFECT_API_URL")  # the server itself is not a client of anything
        env.update(
            {
                "PREFECT_UI_ENABLED": "true",
                "PREFECT_SERVER_API_HOST": HOST,
                "PREFECT_SERVER_API_PORT": str(self.port),
                # the UI must call this server's API, not the default 127.0.0.1:4200
                "PREFECT_UI_API_URL": self.api_url,
                **self.extra_env,
            }
        )
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [*SERVER_COMMAND, "--host", HOST, "--port", str(self.port)],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends uvicorn's children too
        )

    def _wait_healthy(self) -> bool:
        """True once the API answers; False when the process died or time ran out."""
        assert self._process is not None
        deadline = time.monotonic() + self.timeout
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return True
                time.sleep(0.5)
        return False

    def _port_taken(self) -> bool:
        tail = self.log_tail()
        return "address already in use" in tail.lower() or "errno 98" in tail.lower()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's output."""
        return log_tail(self.log_path if self.dir is not None else None, lines)

    def _terminate(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, grace=15)

    def stop(self) -> None:
        """Stop the server and delete its home. Safe to call twice."""
        atexit.unregister(self.stop)
        self._terminate()
        if self._log is not None:
            self._log.close()
            self._log = None
        directory, self.dir = self.dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Keep a server up until Ctrl-C, printing the PREFECT_API_URL to use."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    serve_until_interrupted(
        PrefectServer(port=args.port),
        lambda server: [f"PREFECT_API_URL={server.api_url}  UI: {server.ui_url}"],
    )


if __name__ == "__main__":
    main()
