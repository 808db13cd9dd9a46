"""The one pipeline every flow runs, for any dataset spec: stage -> commit -> warehouses ->
summary, plus the month fan-out and the local-file fetch.

A source's flow only plans (the ``Slice`` a load replaces, its snapshot properties) and fetches
(the source's files into the raw zone); everything after the raw zone is here, once:

- ``stage``: the settings' engine (``CIVICLAKE_ENGINE``) writes the table's and the rejects'
  data files, for the tables ``open_tables`` created or evolved first;
- ``commit``: under the table's lock, complete an interrupted load (``pipeline.commit.repair``),
  refuse an empty load of a slice that has rows, skip a re-run that changes nothing, else commit
  the table then its rejects (``pipeline.commit``) with one set of snapshot properties
  (``properties``), the high-water mark among them;
- ``load_warehouse_task`` / ``stage_streaming``: the same slices replaced in a warehouse from
  the same data files, or (a warehouse that ``streams_while_staging``) while the stage writes
  them;
- ``publish``: the summary as a Prefect artifact;
- ``fan_out``: many slices of one spec (TLC's months), a bounded number at a time, a failure
  naming its slice while the others complete.

``--from-file`` is the generic fetch ``sources.local_file.copy_local_file``.

Tasks pass lake URLs, ``Staged`` descriptors and small dicts, never rows.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from civiclake._private.display import display_value
from civiclake.blocks import Blocks, settings_for
from civiclake.flows._locks import table_lock
from civiclake.flows._sync import WAREHOUSE_PROPERTY, WarehouseNotSynced, load_or_sync
from civiclake.guards import EmptyLoadRefused, refuse_empty, same_rows

if TYPE_CHECKING:
    from prefect.states import State
    from pyiceberg.table import Table

    from civiclake.config import Settings
    from civiclake.lake import Lake
    from civiclake.pipeline import DatasetSpec, RunContext, Staged
    from civiclake.slices import Slice

logger = logging.getLogger("civiclake.flows")

UNCHANGED = "unchanged (nothing committed)"


def run_id() -> str:
    """The flow run's id (a run outside Prefect, e.g. a test harness: a local timestamp)."""
    from prefect.runtime import flow_run

    return str(flow_run.id or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}")


# ---------------------------------------------------------------- stage


def open_tables(
    settings: Settings, spec: DatasetSpec, created: list[str] | None = None
) -> tuple[Table, Table]:
    """The spec's table and rejects table, created (or, a spec that ``evolves``, given its new
    columns) before a stage writes their data files: files are written for the table's current
    schema and partitioning. Under the table's lock when it changes anything (a commit);
    ``created`` gets the names of the tables this call created."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    names = (spec.table, spec.rejects_table)
    if getattr(spec, "evolves", False) or not all(catalog.table_exists(n) for n in names):
        with table_lock(spec.table, settings):  # loads of one table race to create it
            if created is not None:
                created += [n for n in names if not catalog.table_exists(n)]
            return spec.ensure_tables(catalog)
    return catalog.load_table(spec.table), catalog.load_table(spec.rejects_table)


def stage(
    settings: Settings,
    spec: DatasetSpec,
    raw_urls: Iterable[str],
    ctx: RunContext,
    *,
    expected_rows: int | None = None,
    sink: Callable[[Any], None] | None = None,
    created: list[str] | None = None,
    log: Any = None,
) -> Staged:
    """Raw files (a generator is fine: each is staged as soon as it is written) -> data files
    of the table and its rejects, by the settings' engine; nothing committed."""
    from civiclake.pipeline.engines import get_stage

    table, rejects_table = open_tables(settings, spec, created)
    return get_stage(settings.engine)(  # type: ignore[no-any-return]
        spec,
        settings.lake(),
        raw_urls,
        ctx,
        table=table,
        rejects_table=rejects_table,
        expected_rows=expected_rows,
        log=log or logger,
        sink=sink,
    )


def stage_local(
    settings: Settings,
    spec: DatasetSpec,
    path: str,
    raw_urls: list[str],
    ctx: RunContext,
    log: Any = None,
) -> Staged:
    """``stage`` of a user's file (``--from-file``, copied to ``raw_urls``): its errors name
    the user's path, not the raw-zone copy, and an unreadable file is one line."""
    from civiclake.sources.local_file import naming_user_file

    with naming_user_file(settings.lake(), path, raw_urls):
        return stage(settings, spec, raw_urls, ctx, log=log)


def discard(lake: Lake, staged: Staged) -> None:
    """Remove the data files of a stage that will never be committed (else ``maintain``'s
    orphan removal would, later)."""
    for url in [*staged.data_urls, *staged.rejects_urls]:
        with contextlib.suppress(OSError):
            lake.remove(url)


def drop_unloaded(settings: Settings, created: Sequence[str]) -> None:
    """Drop the tables a run created when nothing was committed to them: a failed or
    interrupted first run leaves the catalog as it was."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    for name in created:
        with contextlib.suppress(Exception):
            if catalog.load_table(name).current_snapshot() is None:
                catalog.drop_table(name)


# ---------------------------------------------------------------- commit


def properties(
    run_id: str,
    source: str,
    range_text: str,
    staged: Staged,
    *,
    rows_fetched: int | None = None,
    warehouse: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The snapshot properties of a load (``tables.commit_files`` prefixes them): the same
    lineage for every source, then the source's own (``extra``)."""
    return {
        "run-id": run_id,
        "source": source,
        "range": range_text,
        "rows-fetched": str(staged.rows_read if rows_fetched is None else rows_fetched),
        "rows-loaded": str(staged.rows_valid),
        "rows-rejected": str(staged.rows_rejected),
        **({WAREHOUSE_PROPERTY: warehouse} if warehouse else {}),
        **extra,
    }


@dataclass(frozen=True)
class Replace:
    """What a load replaces: the slice of the table, the slice of its rejects, and the load's
    snapshot properties (``properties``)."""

    replaced: Slice
    rejects_replaced: Slice
    properties: dict[str, str]
    allow_empty: bool = False
    """An empty stage may empty a slice that has rows (``--allow-empty``)."""
    skip_unchanged: bool = True
    """A re-run whose rows and rejects equal the slice's commits nothing."""
    high_water_mark: Callable[[Table], str | None] | None = field(default=None, compare=False)
    """The table's high-water mark after the load, from the table as it is before it (read
    under the lock): written as ``tables.HWM_PROPERTY``."""


def commit(
    settings: Settings, spec: DatasetSpec, staged: Staged, load: Replace, log: Any = None
) -> dict[str, Any]:
    """The commit step, under the table's lock: complete an earlier load's missing rejects
    commit, refuse an empty load of a slice with rows, skip an unchanged re-run, else commit the
    table then its rejects. A refused load removes its staged files; an unchanged one leaves
    them to the warehouses, then ``discard_if_unchanged``."""
    from civiclake import tables
    from civiclake.pipeline.commit import Load, commit as commit_files, repair
    from civiclake.tables.history import partitions_touched

    log = log or logger
    lake = settings.lake()
    catalog = tables.load_catalog(settings)
    with table_lock(spec.table, settings):
        repair(catalog, lake, spec.table, spec.rejects_table, log)
        table = catalog.load_table(spec.table)
        rejects_table = catalog.load_table(spec.rejects_table)
        try:
            refuse_empty(
                table, spec.table, load.replaced, staged.rows_valid, allow_empty=load.allow_empty
            )
        except EmptyLoadRefused:
            discard(lake, staged)
            raise
        if load.skip_unchanged and _unchanged(table, rejects_table, lake, staged, load):
            # (its staged files still feed the warehouses: ``discard_if_unchanged`` removes them)
            snapshot = table.current_snapshot()
            log.info("%s unchanged: nothing committed", spec.table)
            return {
                "snapshot_id": snapshot.snapshot_id if snapshot else None,
                "rows_loaded": staged.rows_valid,
                "table_rows": _total_rows(table),
                "rejects_snapshot_id": None,
                "partitions": [],  # nothing committed, nothing touched
                "changes": UNCHANGED,
            }
        props = dict(load.properties)
        hwm = load.high_water_mark(table) if load.high_water_mark else None
        if hwm:
            props[tables.HWM_PROPERTY] = hwm
        main = commit_files(
            lake, table, rejects_table, Load(staged, load.replaced, load.rejects_replaced, props)
        )
        touched = partitions_touched(table, props["run-id"])  # under the lock: ours are newest
    rejects_snapshot = rejects_table.current_snapshot()
    log.info(
        "committed snapshot %s to %s (%s rows now)",
        main.snapshot_id,
        spec.table,
        f"{main.total_rows:,}",
    )
    return {
        "snapshot_id": main.snapshot_id,
        "rows_loaded": main.rows_written,
        "table_rows": main.total_rows,
        "rejects_snapshot_id": rejects_snapshot.snapshot_id if rejects_snapshot else None,
        "partitions": touched,  # what changed, not every partition the slice spans
    }


def discard_if_unchanged(settings: Settings, staged: Staged, loaded: dict[str, Any]) -> None:
    """After the warehouses: the staged files of a load that committed nothing are no one's."""
    if loaded.get("changes") == UNCHANGED:
        discard(settings.lake(), staged)


def _total_rows(table: Table) -> int:
    snapshot = table.current_snapshot()
    return int(snapshot.summary["total-records"]) if snapshot and snapshot.summary else 0


def _unchanged(
    table: Table, rejects_table: Table, lake: Lake, staged: Staged, load: Replace
) -> bool:
    """A re-run with nothing new: the staged rows and rejects are what the slices hold."""
    return same_rows(rejects_table, load.rejects_replaced, staged.rejects_urls, lake) and same_rows(
        table, load.replaced, staged.data_urls, lake
    )


def refuse_empty_load(
    settings: Settings, spec: DatasetSpec, replaced: Slice, rows: int, allow_empty: bool
) -> None:
    """``refuse_empty`` before the commit step (a load that fills a warehouse first)."""
    from civiclake import tables

    if rows or allow_empty:
        return
    catalog = tables.load_catalog(settings)
    table = catalog.load_table(spec.table) if catalog.table_exists(spec.table) else None
    refuse_empty(table, spec.table, replaced, rows, allow_empty=allow_empty)


@task(name="load", cache_policy=NO_CACHE)
def commit_task(
    spec: DatasetSpec, staged: Staged, load: Replace, blocks: Blocks = None
) -> dict[str, Any]:
    """``commit`` as the flows' ``load`` task."""
    return commit(settings_for(blocks), spec, staged, load, get_run_logger())


# ---------------------------------------------------------------- warehouses


@task(name="load-warehouse", cache_policy=NO_CACHE)
def load_warehouse_task(
    spec: DatasetSpec,
    staged: Staged,
    to: str,
    replaced: Slice,
    rejects_replaced: Slice,
    *,
    evolve: bool = False,
    blocks: Blocks = None,
) -> dict[str, Any]:
    """The same slices replaced in warehouse ``to`` from the staged data files: delete + bulk
    load, one transaction per table (``evolve``: new columns added first)."""
    from civiclake.warehouse import open_warehouse

    settings = settings_for(blocks)
    lake = settings.lake()
    with (
        table_lock(f"{to}:{spec.table}", settings, commits=False),
        open_warehouse(to, settings) as warehouse,
    ):
        rows = warehouse.replace(
            spec.table, spec.arrow_schema(), staged.data_urls, lake, replaced, evolve=evolve
        )
        warehouse.replace(
            spec.rejects_table, spec.rejects_schema(), staged.rejects_urls, lake, rejects_replaced
        )
    get_run_logger().info("replaced %s in %s %s: %s rows", replaced, to, spec.table, f"{rows:,}")
    return {"warehouse": to, "rows": rows}


def stage_streaming(
    settings: Settings,
    spec: DatasetSpec,
    raw_urls: Iterable[str],
    ctx: RunContext,
    to: str,
    replaced: Any,
    rejects_replaced: Slice,
    *,
    allow_empty: bool = False,
    log: Any = None,
) -> tuple[Staged, int]:
    """``stage`` and the warehouse load overlapped, for a warehouse that streams while
    staging (``Capabilities.streams_while_staging``) and a slice known before the stage (a
    ``Window``).

    One warehouse transaction: the window is deleted, the valid rows are COPYed while the files
    are staged (each batch as it is typed), then the staged rejects; it commits only once every
    file is staged and the load is not refused. A corrupt file, a failing rule or a COPY error
    rolls it all back: the window's previous rows stay. Returns the stage and the rows loaded.
    """
    from civiclake.warehouse import open_streaming

    with (
        table_lock(f"{to}:{spec.table}", settings, commits=False),
        open_streaming(to, settings) as warehouse,
        warehouse.range_load(
            spec.table,
            spec.arrow_schema(),
            column=replaced.column,
            start=replaced.start,
            stop=replaced.stop,
        ) as load,
    ):
        staged = stage(settings, spec, raw_urls, ctx, sink=load.write, log=log)
        rows = load.finish()
        # before the COMMIT: a refusal rolls the warehouse back too
        refuse_empty_load(settings, spec, replaced, staged.rows_valid, allow_empty)
        load.replace(
            spec.rejects_table,
            spec.rejects_schema(),
            staged.rejects_urls,
            settings.lake(),
            rejects_replaced,
        )
    return staged, rows


# ---------------------------------------------------------------- one load, end to end


@dataclass(frozen=True)
class Loaded:
    """A load after its commit and its warehouse: what the summary says of them."""

    committed: dict[str, Any]
    to: str | None = None
    warehouse_rows: int | None = None
    not_synced: str | None = None
    """The lake moved and the warehouse did not: the line that says so, with its cause."""

    def summary(
        self, head: dict[str, Any], staged: Staged, run_id: str, began: float
    ) -> dict[str, Any]:
        """The run summary: the source's own fields (``head``), then the stage's (its engine
        and seconds), the commit's, the warehouse's and the run's, the same for every source."""
        committed = self.committed
        return {
            **head,
            **stage_fields(staged),
            **({"changes": committed["changes"]} if "changes" in committed else {}),
            "snapshot_id": committed["snapshot_id"],
            "table_rows": committed["table_rows"],
            **(
                {"warehouse": self.to, "warehouse_rows": self.warehouse_rows}
                if self.warehouse_rows is not None
                else {}
            ),
            **({"warehouse": self.not_synced} if self.not_synced else {}),
            "run_id": run_id,
            "duration_s": round(time.monotonic() - began, 2),
        }

    def raise_if_not_synced(self, summary: dict[str, Any]) -> None:
        if self.not_synced:
            raise WarehouseNotSynced(self.not_synced, summary)


def stage_fields(staged: Staged) -> dict[str, Any]:
    """What a summary says of the stage step: the engine that ran it and its seconds (a
    Spark job's duration, with its start-up)."""
    return {"engine": staged.engine, "stage_s": round(staged.seconds, 2)}


def commit_and_sync(
    settings: Settings,
    spec: DatasetSpec,
    staged: Staged,
    load: Replace,
    *,
    run_id: str,
    to: str | None,
    blocks: Blocks = None,
    warehouse_rejects: Slice | None = None,
    evolve: bool = False,
) -> Loaded:
    """The commit (task ``load``), then the warehouse ``to`` from the same data files (or the
    whole table when an earlier run left it behind), then the staged files of a load that
    committed nothing are removed. ``warehouse_rejects``: the rejects slice in the warehouse
    when it is not the lake's."""
    committed = commit_task(spec, staged, load, blocks=blocks)
    loaded = Loaded(committed)
    if to is not None:
        warehouse, not_synced = load_or_sync(
            lambda: load_warehouse_task(
                spec,
                staged,
                to,
                load.replaced,
                warehouse_rejects or load.rejects_replaced,
                evolve=evolve,
                blocks=blocks,
            ),
            settings=settings,
            identifiers=[spec.table, spec.rejects_table],
            to=to,
            run_id=run_id,
            snapshot_id=committed["snapshot_id"],
        )
        loaded = Loaded(committed, to, warehouse["rows"] if warehouse else None, not_synced)
    discard_if_unchanged(settings, staged, committed)
    return loaded


# ---------------------------------------------------------------- summary


def publish(
    key: str, title: str, description: str, summary: dict[str, Any], figures: str = ""
) -> None:
    """The run summary as a Prefect artifact (a metric/value table, then ``figures``)."""
    from prefect.artifacts import create_markdown_artifact

    rows = "\n".join(f"| {k} | {_cell(k, v)} |" for k, v in summary.items())
    create_markdown_artifact(
        key=key,
        markdown=f"## {title}\n\n| metric | value |\n|---|---|\n{rows}\n{figures}",
        description=description,
    )


def _cell(key: str, value: Any) -> str:
    if isinstance(value, list):
        if len(value) <= 12:
            return ", ".join(map(str, value))
        return f"{value[0]} .. {value[-1]} ({len(value)})"
    return display_value(key, value)


# ---------------------------------------------------------------- fan-out


def fan_out(
    task: Any, calls: Sequence[tuple[str, dict[str, Any]]], limit: int, log: Any = None
) -> list[tuple[str, Any, BaseException | None, str]]:
    """Run ``task`` once per call (``(name, parameters)``), at most ``limit`` at a time, on a
    thread pool of exactly that size (a flow's own runner is fixed at import, before settings
    exist). Returns ``(name, result, error, error line)`` per call, in order: a failed call
    names itself and the others complete."""
    from prefect.task_runners import ThreadPoolTaskRunner

    out: list[tuple[str, Any, BaseException | None, str]] = []
    with ThreadPoolTaskRunner(max_workers=max(1, limit)) as runner:
        futures = [(name, runner.submit(task, params)) for name, params in calls]
        for name, future in futures:
            future.wait()
            state = future.state
            if state.is_completed():
                out.append((name, future.result(), None, ""))
                continue
            error = _error_of(state)
            text = str(error) if error else (state.message or "failed")
            line = " ".join(text.split())
            (log or logger).error("%s failed: %s", name, line)
            out.append((name, None, error, line))
    return out


def _error_of(state: State[Any]) -> BaseException | None:
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as exc:
            error = exc
    return error
