"""End the ``civiclake`` process without tearing the interpreter down after a flow ran.

After a run command's last line, Python's own finalization (freeing every module of Prefect,
pyarrow, PyIceberg, DuckDB and their objects) took 1.9-3.3 s of a 2-core machine's time while
nothing was left to do (measured: the command's end, its atexit handlers ~0.01 s, then the
teardown; bench/README.md). :func:`after_run` does what a normal exit does first -- the
thread-exit hooks (Prefect drains its API log and event workers there), then the atexit
handlers, then flushing stdout and stderr -- and ends the process with ``os._exit``.

Only in the real command (``civiclake.cli.main``) and only once Prefect was imported:
library use and in-process tests (Typer's ``CliRunner``) exit as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading


def exit_code(code: object) -> int:
    """What ``sys.exit(code)`` would make the process return (a text is printed, then 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{code}\n")
    return 1


def after_run(code: object) -> None:
    """End the process now with ``code`` when a flow ran in it; otherwise return."""
    if "prefect" not in sys.modules or os.environ.get("CIVICLAKE_SLOW_EXIT"):
        return
    status = exit_code(code)
    shutdown = getattr(threading, "_shutdown", None)  # CPython: the thread-exit hooks + joins
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        return
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
