"""The fetch side of the B&T source: plan (load ranges, the high-water mark) and API -> raw
zone, with light imports only.

Split from ``sources/bnt.py`` so a command reaches its first request without importing
PyArrow and PyIceberg (about 1.5 s on this machine) or Prefect: ``fetch_ahead`` starts a run's
fetch in the command, before Prefect is imported (``_private.head_start``), and the flow's fetch
takes it over (``take_ahead``). ``sources/bnt.py`` re-exports the rest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from civiclake._private import head_start
from civiclake.errors import ParameterError
from civiclake.lake import Lake, host_of
from civiclake.sources import socrata_fetch
from civiclake.sources.socrata import SocrataClient, date_range_where
from civiclake.sources.socrata_fetch import FetchProgress

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from civiclake.config import Settings

logger = logging.getLogger("civiclake.sources.bnt")
Log = logging.Logger | logging.LoggerAdapter[Any]

DATASET_ID = "qzve-kjga"
DATE_FIELD = "date"
CANCEL_WAIT_SECONDS = 5.0
"""How long giving up a head start waits for a request under way (then its pages are removed)."""
AHEAD_PAGES = 100_000
"""How far the fetch may run ahead of the stage: unbounded in practice (a page waits in the
lake, not in memory), so the fetch never waits for the stage's imports or its typing."""
TABLE = "mta.bnt_traffic_hourly"
REJECTS_TABLE = "mta.bnt_traffic_hourly_rejects"
HEAD_START = "bnt-fetch"
T = TypeVar("T")


# ---------------------------------------------------------------- load context and ranges


@dataclass(frozen=True)
class LoadRange:
    """Dates ``[start, stop)`` a load replaces."""

    start: date
    stop: date

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.stop.isoformat()}"

    def table_filter(self) -> BooleanExpression:
        from civiclake.slices import Window

        return Window(DATE_FIELD, self.start, self.stop).iceberg_filter()


# ---------------------------------------------------------------- plan: the range a run replaces


def high_water_mark(settings: Settings) -> date | None:
    """Latest ``date`` in the table: the current snapshot's property, or (a table written
    before the property, or a snapshot of ``maintain``) its data files' statistics."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(TABLE):
        return None
    return table_high_water_mark(catalog.load_table(TABLE))


def table_high_water_mark(table: Table) -> date | None:
    from civiclake import tables

    if table.current_snapshot() is None:
        return None
    value = tables.snapshot_property(table, tables.HWM_PROPERTY)
    if value:
        return date.fromisoformat(value)
    files = table.inspect.files()
    if files.num_rows == 0:
        return None
    uppers = [
        m["date"]["upper_bound"]
        for m in files.column("readable_metrics").to_pylist()
        if m and m.get("date") and m["date"]["upper_bound"] is not None
    ]
    return max(uppers) if uppers else None


def plan_range(
    start: date | None,
    stop: date | None,
    *,
    lookback_days: int,
    today: date,
    hwm: date | None,
) -> LoadRange:
    """The ``[start, stop)`` a run replaces; stop defaults to the end of today."""
    stop = stop or today + timedelta(days=1)
    if start is None:
        if hwm is None:
            raise ParameterError(
                f"{TABLE} is empty: give --start-date for the first load (or --from-file)"
            )
        start = hwm - timedelta(days=lookback_days)
    if stop <= start:
        raise ParameterError(
            f"stop date {stop.isoformat()} must be after start date {start.isoformat()} "
            "(the range is [start, stop))"
        )
    return LoadRange(start, stop)


def planned_range(
    settings: Settings, start: date | None, stop: date | None, lookback_days: int | None
) -> tuple[LoadRange, date | None]:
    """The range of a run with these parameters (and the high-water mark it started from)."""
    lookback = settings.bnt_lookback_days if lookback_days is None else lookback_days
    hwm = None if start else high_water_mark(settings)
    return plan_range(start, stop, lookback_days=lookback, today=date.today(), hwm=hwm), hwm


# ---------------------------------------------------------------- fetch: source -> raw zone


def raw_dir(lake: Lake, source_host: str, dataset_id: str, run_id: str) -> str:
    return lake.raw_dir("socrata", source_host, dataset_id, run_id=run_id)


def page_query(
    dataset_id: str, load_range: LoadRange, folder: str, page_size: int
) -> socrata_fetch.PageQuery:
    """The pages of a range: B&T's plain fields (without `:*` the pages are smaller: 12 % on
    the replay server, which adds `:id` alone)."""
    where = date_range_where(DATE_FIELD, load_range.start, load_range.stop)
    return socrata_fetch.PageQuery(dataset_id, folder, where, page_size, select=None)


def fetch_range(
    client: SocrataClient,
    lake: Lake,
    load_range: LoadRange,
    consume: Callable[[Iterable[str], int], T],
    *,
    run_id: str,
    dataset_id: str = DATASET_ID,
    page_size: int = 50_000,
    log: Log = logger,
    ahead: Ahead | None = None,
) -> tuple[FetchProgress, T]:
    """Page the range into the raw zone with the Socrata source's pager and count check
    (``socrata_fetch.fetch_counted``), each page handed to ``consume`` as it is written (a
    stage). The fetch runs ahead of the stage freely (pages wait in the lake, not in memory).
    The first attempt may be the fetch the command began (``ahead``)."""
    out, fetched = socrata_fetch.fetch_counted(
        client,
        lake,
        page_query(
            dataset_id,
            load_range,
            raw_dir(lake, host_of(client.base_url), dataset_id, run_id),
            page_size,
        ),
        consume,
        incomplete=lambda error: f"incomplete fetch of {dataset_id} for {load_range}: {error}",
        depth=AHEAD_PAGES,
        first=ahead.running if ahead else None,
        log=log,
        about=f" for {load_range}",
    )
    return fetched, out


# ---------------------------------------------------------------- the command's head start


@dataclass(frozen=True)
class Ahead:
    """A fetch the command began (``fetch_ahead``), and its held log lines."""

    running: socrata_fetch.RunningFetch
    log: head_start.DeferredLog


def ahead_key(settings: Settings, load_range: LoadRange, page_size: int) -> Hashable:
    """What a fetch asks: the same key, the same pages."""
    token = settings.socrata_app_token
    return (
        settings.resolved_lake_url,
        settings.socrata_url,
        settings.bnt_dataset_id,
        token.get_secret_value() if token else None,
        load_range,
        page_size,
    )


def fetch_ahead(
    settings: Settings,
    *,
    start_date: date | None,
    stop_date: date | None,
    lookback_days: int | None,
    page_size: int | None,
) -> None:
    """Start, in a thread, the API fetch a ``bnt run`` with these parameters makes: planned as
    the flow plans (an incremental run reads the table's high-water mark), counted, then paged
    into the raw zone (``raw/.../run=cli-<id>``). The flow's fetch takes it (``take_ahead``)
    when it plans the same; a plan or count that fails here is left for the flow to report."""
    lake = settings.lake()
    size = page_size or settings.page_size
    log = head_start.DeferredLog(logger.name)
    started = head_start.HeadStart(cancel=lambda: None, ready=threading.Event())
    guard = threading.Lock()
    cancelled = threading.Event()

    def begin() -> None:
        try:
            load_range, _ = planned_range(settings, start_date, stop_date, lookback_days)
            client = SocrataClient.from_settings(settings)
        except Exception:  # the flow plans again and says what is wrong
            started.ready.set()
            return
        running = None
        try:
            if not cancelled.is_set():
                folder = raw_dir(
                    lake,
                    host_of(client.base_url),
                    settings.bnt_dataset_id,
                    f"cli-{uuid.uuid4().hex[:12]}",
                )
                running = socrata_fetch.start_fetch(  # the count, then a thread paging
                    client,
                    lake,
                    page_query(settings.bnt_dataset_id, load_range, folder, size),
                    depth=AHEAD_PAGES,
                    close_client=True,
                    log=log,
                    about=f" for {load_range}",
                )
        except Exception:  # the count failed: the flow fetches again and reports
            running = None
        with guard:
            if running is not None and not cancelled.is_set():
                running.pages.start()  # it closes the client when it ends
                started.key = ahead_key(settings, load_range, size)
                started.value = Ahead(running, log)
            else:
                client.close()
        started.ready.set()

    thread = threading.Thread(target=begin, name="civiclake-fetch-ahead", daemon=True)

    def cancel() -> None:
        with guard:
            cancelled.set()
        thread.join(CANCEL_WAIT_SECONDS)  # a plan or count under way
        ahead: Ahead | None = started.value
        if ahead is not None:
            ahead.running.pages.close(timeout=CANCEL_WAIT_SECONDS)
            with contextlib.suppress(OSError):
                for url in lake.list(ahead.running.folder):
                    lake.remove(url)

    started.cancel = cancel
    head_start.begin(HEAD_START, started)
    thread.start()
    head_start.warm(_stage_imports)


def _stage_imports() -> None:
    """What the stage imports before its first page (1.3 s measured after the flow began)."""
    import civiclake.pipeline.engines.arrow
    import civiclake.sources.bnt
    import civiclake.tables  # noqa: F401


def take_ahead(
    settings: Settings,
    load_range: LoadRange,
    page_size: int,
    log: Log,
) -> Ahead | None:
    """The fetch the command began for exactly this load (its log lines now go to ``log``),
    or None."""
    ahead: Ahead | None = head_start.take(HEAD_START, ahead_key(settings, load_range, page_size))
    if ahead is not None:
        log.info("taking over the fetch the command began into %s", ahead.running.folder)
        ahead.log.attach(log)
    return ahead
