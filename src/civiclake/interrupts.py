"""Ctrl-C during ``bnt run`` / ``taxi run`` / ``socrata run``: stop now, say what was committed.

Python's default (a ``KeyboardInterrupt`` raised wherever the main thread is) did not stop a
run: Prefect's engine, the fetch's worker threads and the temporary server (which got the same
SIGINT from the terminal and died under the run) turned it into minutes of tracebacks, or a
run that went on to commit. So the CLI installs :func:`install`'s handler instead:

- outside a commit, the process ends at once: the temporary Prefect server is stopped, one line
  ``interrupted: nothing committed`` (or ``interrupted: committed snapshot N`` when an earlier
  commit of this run, e.g. another TLC month, landed) and exit code 130. Nothing half-done
  remains visible: every lake write is atomic and Iceberg commits are all-or-nothing; the
  run's table locks are file locks the kernel releases.
- inside a commit (:func:`committing`, entered by the table lock around a table and its
  rejects table), the handler only notes the interrupt; the commit finishes, then the process
  ends the same way, naming the snapshot. A table and its rejects never end one load apart.

Without :func:`install` (library use, deployments) nothing here changes any behaviour.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C

_lock = threading.RLock()  # re-entrant: the handler runs on the main thread, maybe inside
_state: dict[str, object] = {"installed": False, "interrupted": False, "depth": 0}
_commits: list[tuple[str, int]] = []
_undo: list[Callable[[], None]] = []


def install(*, guard_server: bool = True) -> None:
    """Handle SIGINT as described above, and keep Prefect's temporary server from outliving
    this process (``civiclake._private.server_guard``; ``guard_server=False``: only the
    handler, e.g. before the command knows which Prefect server it uses). Call on the main
    thread."""
    from civiclake._private import server_guard

    if guard_server:
        server_guard.install()
    signal.signal(signal.SIGINT, _on_sigint)
    _state["installed"] = True


def record_commit(table: str, snapshot_id: int | None) -> None:
    """Note a commit of this process (``tables.replace_range`` calls it), for the line an
    interrupted CLI run ends with; nothing is kept where the handler is not installed."""
    if snapshot_id is not None and _state["installed"]:
        with _lock:
            _commits.append((table, snapshot_id))


@contextmanager
def committing() -> Iterator[None]:
    """A section an interrupt waits for (Iceberg commits of a table and its rejects)."""
    with _lock:
        ending = bool(_state["interrupted"])
        if not ending:
            _state["depth"] = int(_state["depth"]) + 1  # type: ignore[call-overload]
    if ending:
        _park()  # the process is ending: do not start a commit now
    try:
        yield
    finally:
        with _lock:
            _state["depth"] = int(_state["depth"]) - 1  # type: ignore[call-overload]
            finish = _state["interrupted"] and _state["depth"] == 0
        if finish:
            _exit_now()


def message() -> str:
    """The one line an interrupted run ends with."""
    with _lock:
        snapshots = [s for t, s in _commits if not t.endswith("_rejects")] or [
            s for _, s in _commits
        ]
    if not snapshots:
        return "interrupted: nothing committed"
    if len(snapshots) == 1:
        return f"interrupted: committed snapshot {snapshots[0]}"
    return "interrupted: committed snapshots " + ", ".join(map(str, snapshots))


@contextmanager
def undone_if_interrupted(undo: Callable[[], None]) -> Iterator[None]:
    """Run ``undo`` (best effort) if the process ends on an interrupt inside this block: e.g.
    drop the empty tables a first load created before its commit, so ``nothing committed``
    leaves the catalog as it was."""
    with _lock:
        _undo.append(undo)
    try:
        yield
    finally:
        with _lock, suppress(ValueError):
            _undo.remove(undo)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    with _lock:
        if _state["interrupted"]:
            return  # a second Ctrl-C while a commit finishes: it ends right after
        _state["interrupted"] = True
        inside = int(_state["depth"]) > 0  # type: ignore[call-overload]
    if not inside:
        _exit_now()


def _exit_now() -> None:
    """Stop the temporary server, print the line, end the process (no unwinding: threads of
    the fetch and Prefect's engine would go on, or print tracebacks)."""
    line = message()
    from civiclake._private import server_guard

    with _lock:
        undo = list(_undo)
    for step in reversed(undo):
        with suppress(Exception):
            step()

    with suppress(Exception):
        server_guard.stop_servers()
    with suppress(Exception):
        sys.stdout.flush()
    with suppress(Exception):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    os._exit(EXIT_CODE)


def _park() -> None:
    while True:  # pragma: no cover - ended by _exit_now on another thread
        time.sleep(1)
