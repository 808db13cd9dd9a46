"""Serialize writers of the same table across processes, with locks a crash cannot strand.

Two runs writing the same table at the same time (a schedule and a manual backfill, two
workers) queue on the table's lock instead of racing; Iceberg commit conflicts are also
retried (``tables.replace_range``), this keeps the retries rare. A lock is keyed by the
catalog (its URI and name) and the table, so same-named tables of two lakes never block each
other.

Which lock (see the README, "Table locks"):

- **A file lock** (``flock``) on ``<catalog dir>/locks/<table>-<key>.lock`` when the catalog is
  an SQLite file (everything sharing it is on this machine), or under ``$CIVICLAKE_HOME/locks``
  when the catalog is a server but no long-running Prefect server is configured. The kernel
  releases it when its holder dies, however it dies (SIGKILL, OOM, power loss of a container):
  a crash never strands it. The holder writes its pid, host, start time and run id into the
  file, so a waiting run can say what it waits for.
- **A Prefect global concurrency limit** ``civiclake-table:<table>@<key>`` (one slot) when the
  catalog is a server (PostgreSQL, REST) shared across machines and ``PREFECT_API_URL`` names
  a long-running Prefect server: its lease service frees the slot of a holder that died
  (after the lease, 5 minutes). Prefect's temporary per-command server cannot: its leases live
  in its memory and die with it while the slot stays taken (../shared/env-facts.md).

A waiting run logs the holder, then gives up after ``CIVICLAKE_LOCK_TIMEOUT`` seconds (default
two hours: longer than a long load) with one line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from civiclake import interrupts
from civiclake.errors import CivicLakeError

if TYPE_CHECKING:
    from civiclake.config import Settings

LOCK_PREFIX = "civiclake-table:"
LOCK_DIR = "locks"
POLL_SECONDS = 0.5
LOG_EVERY_SECONDS = 60.0
PREFECT_LEASE_SECONDS = 300
log = logging.getLogger("civiclake.locks")


def catalog_key(settings: Settings) -> str:
    """A short digest naming the catalog (its URI and name): the part of a lock's key that
    keeps two lakes' same-named tables apart."""
    ident = f"{settings.resolved_catalog_uri}\0{settings.resolved_catalog_name}"
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def lock_name(table: str, settings: Settings) -> str:
    """The Prefect global concurrency limit of ``table`` (long-running server path)."""
    return f"{LOCK_PREFIX}{table}@{catalog_key(settings)}"


def _sqlite_path(uri: str) -> Path | None:
    match = re.match(r"^sqlite(?:\+\w+)?:///(.+)$", uri)
    return Path(match.group(1)) if match and match.group(1) != ":memory:" else None


def uses_file_lock(settings: Settings) -> bool:
    """File locks for an SQLite catalog, or when no long-running Prefect server is set."""
    return _sqlite_path(settings.resolved_catalog_uri) is not None or not os.environ.get(
        "PREFECT_API_URL"
    )


def lock_path(table: str, settings: Settings) -> Path:
    """Where the file lock of ``table`` lives: beside the SQLite catalog, else in the home."""
    db = _sqlite_path(settings.resolved_catalog_uri)
    folder = (db.expanduser().parent if db else settings.home_dir) / LOCK_DIR
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", table)
    return folder / f"{safe}-{catalog_key(settings)}.lock"


def read_holder(path: Path) -> dict[str, Any] | None:
    """What the holder of a lock file wrote about itself (None: free, or being written)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    with suppress(ValueError):
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else None
    return None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another run (it has not said which yet)"
    run = f" (run {holder['run_id']})" if holder.get("run_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}{run}"


def _run_id() -> str | None:
    if "prefect" not in sys.modules:
        return None
    with suppress(Exception):
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    return None


@contextmanager
def file_lock(path: Path, label: str, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; the kernel frees it when this process dies.

    Each call opens the file anew: ``flock`` locks belong to the open file, so two threads of
    one process exclude each other too (TLC months in parallel).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        began = time.monotonic()
        logged_at: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            holder = describe_holder(read_holder(path))
            waited = time.monotonic() - began
            if waited >= timeout:
                raise CivicLakeError(
                    f"{label} is locked by {holder}: gave up after {timeout:g} s of waiting "
                    "(CIVICLAKE_LOCK_TIMEOUT); let that run finish, then run again"
                )
            if logged_at is None or time.monotonic() - logged_at >= LOG_EVERY_SECONDS:
                log.warning(
                    "waiting for the lock on %s: held by %s (gives up after %g s)",
                    label,
                    holder,
                    timeout,
                )
                logged_at = time.monotonic()
            time.sleep(min(POLL_SECONDS, max(timeout - waited, 0.01)))
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_id": _run_id(),
            "lock": label,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def prefect_lock(name: str, label: str, timeout: float) -> Iterator[None]:
    """Hold the one-slot Prefect global concurrency limit ``name`` (long-running server)."""
    from prefect.concurrency.sync import concurrency

    ensure_table_limit(name)
    began = time.monotonic()
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=min(1.0, timeout), strict=True)
            )
        except TimeoutError:
            log.warning(
                "waiting for the lock on %s: the Prefect limit %s is held by another run "
                "(a crashed holder's lease expires after %d s; gives up after %g s)",
                label,
                name,
                PREFECT_LEASE_SECONDS,
                timeout,
            )
            remaining = max(timeout - (time.monotonic() - began), 0.01)
            try:
                stack.enter_context(
                    concurrency(name, occupy=1, timeout_seconds=remaining, strict=True)
                )
            except TimeoutError:
                raise CivicLakeError(
                    f"{label} is locked by another run (Prefect limit {name}): gave up after "
                    f"{timeout:g} s of waiting (CIVICLAKE_LOCK_TIMEOUT); let that run finish, "
                    "then run again"
                ) from None
        yield


def ensure_table_limit(name: str) -> None:
    """Create the one-slot limit ``name`` if it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


REJECTS_SUFFIX = "_rejects"


def covering_table(table: str) -> str:
    """The table whose lock covers writes to ``table``: a load commits a table and then its
    rejects table (``<table>_rejects``) under the table's lock, so anything else writing a
    rejects table (``maintain``) takes that same lock."""
    if table.endswith(REJECTS_SUFFIX) and not table.endswith("." + REJECTS_SUFFIX):
        return table.removesuffix(REJECTS_SUFFIX)
    return table


@contextmanager
def table_lock(table: str, settings: Settings, *, commits: bool = True) -> Iterator[None]:
    """Hold ``table``'s lock (of ``settings``' catalog) while writing it.

    ``commits``: the body commits to Iceberg, so a Ctrl-C arriving inside it waits for the
    commit to finish (``civiclake.interrupts``) rather than leaving a table and its rejects
    table one load apart. Warehouse loads pass False: their transaction rolls back on exit.
    """
    label = f"{table} (catalog {settings.resolved_catalog_name})"
    timeout = settings.lock_timeout
    holding = (
        file_lock(lock_path(table, settings), label, timeout)
        if uses_file_lock(settings)
        else prefect_lock(lock_name(table, settings), label, timeout)
    )
    with holding:
        if commits:
            with interrupts.committing():
                yield
        else:
            yield
