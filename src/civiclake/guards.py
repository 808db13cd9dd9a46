"""Checks that stop a load before it can silently lose data.

A load deletes its slice and appends the staged rows in one commit: with an empty stage (a
header-only file, a typo in a filter, a source that answered nothing) that commit is a delete.
Every pipeline asks :func:`refuse_empty` before it commits, to Iceberg and to a warehouse.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from civiclake.errors import CivicLakeError, ParameterError

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from civiclake.lake import Lake
    from civiclake.slices import Slice

ALLOW_EMPTY_OPTION = "--allow-empty"
P = ParamSpec("P")
R = TypeVar("R")


class EmptyLoadRefused(ParameterError):
    """The load holds no row for a slice that has rows: committing would only delete them."""


def rows_in(table: Table, replaced: Slice) -> int:
    """Rows of the table's current snapshot inside the slice (metadata first, data if needed)."""
    from civiclake.slices import WholeTable

    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    if isinstance(replaced, WholeTable) and snapshot.summary is not None:
        return int(snapshot.summary["total-records"])
    return int(table.scan(row_filter=replaced.iceberg_filter()).count())


def refuse_empty(
    table: Table | None, identifier: str, replaced: Slice, staged_rows: int, *, allow_empty: bool
) -> None:
    """Raise :class:`EmptyLoadRefused` when ``staged_rows`` is 0 and the slice holds rows.

    One line naming the slice and what it would delete; ``allow_empty`` (the ``--allow-empty``
    option, the flows' ``allow_empty`` parameter) lets the user empty the slice on purpose.
    """
    if staged_rows or allow_empty or table is None:
        return
    existing = rows_in(table, replaced)
    if existing:
        raise EmptyLoadRefused(
            f"refusing to replace {replaced} of {identifier} with nothing: the load holds 0 rows "
            f"and would delete {existing:,} (pass {ALLOW_EMPTY_OPTION} to empty it)"
        )


def refusing(fn: Callable[P, R]) -> Callable[P, R]:
    """A flow function whose refusal (``EmptyLoadRefused``) ends the run as ``refused`` says,
    put under ``@flow``. The wrapper lives in ``fn``'s module globals: Prefect resolves the
    parameters' annotations there (through ``__wrapped__``)."""
    refusal, end = EmptyLoadRefused, refused  # closure cells: the wrapper's globals are fn's

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except refusal as exc:
            return end(exc)  # type: ignore[no-any-return]

    rebound = types.FunctionType(run.__code__, fn.__globals__, fn.__name__, None, run.__closure__)
    return functools.wraps(fn)(rebound)  # type: ignore[return-value]


def refused(exc: CivicLakeError) -> Any:
    """The flow's final state for a refusal: Failed, its message the one line (a scheduled run
    shows it as is); a direct call (the CLI) still raises ``exc``."""
    from prefect.states import Failed

    return Failed(message=str(exc), data=exc)


LINEAGE_COLUMNS = frozenset(
    {"load_run_id", "load_source", "loaded_at", "rejected_at", "load_range"}
)
"""Columns a load stamps (which run, when): not content, so ignored by :func:`same_rows`."""


def same_rows(
    table: Table | None, replaced: Slice, staged_url: str | list[str], lake: Lake
) -> bool:
    """The staged rows (one file, or a load's data files) are exactly the rows the slice holds
    now (lineage columns aside): a re-run with nothing new at the source, whose commit would
    change nothing but lineage. Compared in memory: meant for the slices of incremental re-runs
    (a few days, the ids fetched), not for a full refresh of a large table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table is None or table.current_snapshot() is None:
        return False
    parts = []
    for url in [staged_url] if isinstance(staged_url, str) else staged_url:
        with lake.open(url) as handle:
            parts.append(pq.read_table(handle))
    current = table.scan(row_filter=replaced.iceberg_filter()).to_arrow()
    if not parts:  # a load of no data files
        return current.num_rows == 0
    staged = pa.concat_tables(parts, promote_options="permissive")
    if staged.num_rows != current.num_rows:
        return False
    columns = [c for c in current.column_names if c not in LINEAGE_COLUMNS]
    if any(c not in staged.column_names for c in columns):
        return False
    if staged.num_rows == 0:
        return True
    try:
        a = current.select(columns).cast(staged.select(columns).schema)
        keys = [(c, "ascending") for c in columns]
        return bool(a.sort_by(keys).equals(staged.select(columns).sort_by(keys)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False  # a type that cannot be sorted or cast: treated as changed, committed
