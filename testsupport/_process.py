"""What every local test server needs: a free port, its log's last lines, a stop that leaves no
process of its group behind, ``with`` around its start and stop (``Service``), and a ``main``
that keeps it up by hand until Ctrl-C (``serve_until_interrupted``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on at this moment (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file; empty when there is none."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group (started with ``start_new_session=True``), SIGKILL it after
    ``grace`` seconds, then any children that outlived the leader and still hold the group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class Service:
    """A local server the tests start and stop: ``with X() as x`` is ``x.start()`` then, however
    the block ends, ``x.stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_until_interrupted(service: Service, describe: Callable[[Any], list[str]]) -> None:
    """Keep ``service`` up until Ctrl-C or ``kill`` (SIGTERM unwinds through ``stop`` too, not
    orphaning it), printing ``describe(service)``: the settings that point civiclake at it."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with service as started:
        for line in describe(started):
            print(line, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
