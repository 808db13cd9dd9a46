"""Serialize writers of the same table across processes with a Prefect global concurrency limit.

Two runs loading the same table at the same time (a schedule and a manual backfill, two
workers) queue on the limit ``civiclake-table:<table>`` (one slot) instead of racing. Iceberg
commit conflicts are also retried (``tables.replace_range``); this keeps the retries rare.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LOCK_PREFIX = "civiclake-table:"
LOCK_TIMEOUT_SECONDS = 3600.0


def lock_name(table: str) -> str:
    return f"{LOCK_PREFIX}{table}"


def ensure_table_limit(table: str) -> None:
    """Create the one-slot limit for ``table`` if it does not exist yet."""
    name = lock_name(table)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@contextmanager
def table_lock(table: str) -> Iterator[None]:
    """Hold the table's slot for the duration of a load."""
    ensure_table_limit(table)
    with concurrency(lock_name(table), occupy=1, timeout_seconds=LOCK_TIMEOUT_SECONDS, strict=True):
        yield
