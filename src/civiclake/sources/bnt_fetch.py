"""The fetch side of the B&T source: plan (load ranges, the high-water mark) and API -> raw
zone, with light imports only.

Split from ``sources/bnt.py`` so a command reaches its first request without importing
PyArrow and PyIceberg (about 1.5 s on this machine) or Prefect: ``fetch_ahead`` starts a run's
fetch in the command, before Prefect is imported (``_private.head_start``), and the flow's fetch
takes it over (``take_ahead``). ``sources/bnt.py`` re-exports the rest.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from civiclake._private import head_start
from civiclake._private.prefetch import Prefetch
from civiclake._private.progress import Progress
from civiclake.errors import ParameterError, SourceError
from civiclake.lake import Lake, host_of
from civiclake.sources.socrata import SocrataClient, date_range_where

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from civiclake.config import Settings

logger = logging.getLogger("civiclake.sources.bnt")

DATASET_ID = "qzve-kjga"
DATE_FIELD = "date"
# ':id' is Socrata's row id: unique and stable, so offset paging neither repeats nor skips rows.
PAGE_ORDER = ":id"
GC_EVERY_PAGES = 4
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


@dataclass(frozen=True)
class FetchResult:
    raw_urls: list[str]
    rows: int
    expected: int
    pages: int
    retries: int


def raw_dir(lake: Lake, source_host: str, dataset_id: str, run_id: str) -> str:
    return lake.raw_dir("socrata", source_host, dataset_id, run_id=run_id)


class PageFetch:
    """One fetch of a range, page by page: iterating it writes each page to the raw zone
    (atomically) and yields its URL at once, so staging overlaps fetching and memory holds one
    page. After the last page it checks the rows against the portal's ``count(*)``: ``result``
    is then set, or ``mismatch`` says what was missing."""

    def __init__(
        self,
        client: SocrataClient,
        lake: Lake,
        load_range: LoadRange,
        *,
        run_id: str,
        dataset_id: str = DATASET_ID,
        page_size: int = 50_000,
        log: logging.Logger | logging.LoggerAdapter[Any] = logger,
    ) -> None:
        self.client, self.lake, self.load_range = client, lake, load_range
        self.dataset_id, self.page_size, self.log = dataset_id, page_size, log
        host = host_of(client.base_url)
        self.target = raw_dir(lake, host, dataset_id, run_id)
        self.result: FetchResult | None = None
        self.mismatch = ""

    def __iter__(self) -> Iterator[str]:
        client, dataset_id = self.client, self.dataset_id
        where = date_range_where(DATE_FIELD, self.load_range.start, self.load_range.stop)
        for stale in self.lake.list(self.target):  # a retried fetch starts from a clean directory
            self.lake.remove(stale)
        expected = client.count(dataset_id, where=where)
        self.log.info(
            "%s %s: %s rows to fetch for %s",
            dataset_id,
            client.base_url,
            f"{expected:,}",
            self.load_range,
        )
        urls: list[str] = []
        rows = 0
        with Progress(f"fetch {dataset_id}", total=expected, logger=self.log) as progress:
            for page in client.iter_pages(
                dataset_id, order=PAGE_ORDER, where=where, page_size=self.page_size
            ):
                url = f"{self.target}/page-{page.number:06d}.json"
                self.lake.write_bytes(url, page.body)
                urls.append(url)
                rows += len(page.rows)
                progress.advance(len(page.rows))
                del page
                if len(urls) % GC_EVERY_PAGES == 0:
                    # httpx keeps each response in a reference cycle: without a collection,
                    # every page body would stay in memory until the fetch ends
                    gc.collect()
                yield url
        if rows != expected:
            expected = client.count(dataset_id, where=where)
        if rows == expected:  # (or the source changed while we paged: what we hold is complete)
            self.result = FetchResult(urls, rows, expected, len(urls), client.retries)
        else:
            self.mismatch = f"fetched {rows:,} rows but the portal counts {expected:,}"


def fetch_range(
    client: SocrataClient,
    lake: Lake,
    load_range: LoadRange,
    *,
    run_id: str,
    dataset_id: str = DATASET_ID,
    page_size: int = 50_000,
    attempts: int = 2,
    consume: Callable[[Iterable[str]], T] = list,  # type: ignore[assignment]
    discard: Callable[[T], None] | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
    ahead: Ahead | None = None,
) -> tuple[FetchResult, T]:
    """Page the range into the raw zone, each page handed to ``consume`` as it is written
    (e.g. a stage); fail unless every row the portal counts arrived.

    When the rows fetched differ from ``count(*)`` (the portal changed underneath, or a page
    came back short), what ``consume`` made is ``discard``-ed and the whole range is fetched
    (and consumed) again, up to ``attempts`` times, then the run fails. The first attempt may
    be a fetch the command started (``ahead``: ``consume`` then gets its running pages).
    """
    fetch: PageFetch | None = None
    for attempt in range(1, attempts + 1):
        if attempt == 1 and ahead is not None:
            fetch = ahead.fetch
            out = consume(ahead.pages)
        else:
            fetch = PageFetch(
                client,
                lake,
                load_range,
                run_id=run_id,
                dataset_id=dataset_id,
                page_size=page_size,
                log=log,
            )
            out = consume(fetch)
        if fetch.result is not None:
            return fetch.result, out
        if discard is not None:
            discard(out)
        log.warning("%s for %s (attempt %d/%d)", fetch.mismatch, load_range, attempt, attempts)
    mismatch = fetch.mismatch if fetch else ""
    raise SourceError(f"incomplete fetch of {dataset_id} for {load_range}: {mismatch}")


# ---------------------------------------------------------------- the command's head start


@dataclass(frozen=True)
class Ahead:
    """A fetch the command started (``fetch_ahead``): its pages, yielded as they are written."""

    fetch: PageFetch
    pages: Prefetch[str]
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
    the flow plans (an incremental run reads the table's high-water mark), then paged into the
    raw zone (``raw/.../run=cli-<id>``). The flow's fetch takes it (``take_ahead``) when it
    plans the same; a plan that fails here is left for the flow to report."""
    lake = settings.lake()
    size = page_size or settings.page_size
    log = head_start.DeferredLog(logger.name)
    started = head_start.HeadStart(cancel=lambda: None, ready=threading.Event())

    def pages() -> Iterator[str]:
        try:
            load_range, _ = planned_range(settings, start_date, stop_date, lookback_days)
            client = SocrataClient.from_settings(settings)
        except Exception:  # the flow plans again and says what is wrong
            started.ready.set()
            return
        with client:
            fetch = PageFetch(
                client,
                lake,
                load_range,
                run_id=f"cli-{uuid.uuid4().hex[:12]}",
                dataset_id=settings.bnt_dataset_id,
                page_size=size,
                log=log,
            )
            started.key = ahead_key(settings, load_range, size)
            started.value = Ahead(fetch, running, log)
            started.ready.set()
            yield from fetch

    running = Prefetch(pages(), depth=100_000, name="civiclake-fetch-ahead")

    def cancel() -> None:
        running.close(timeout=5)
        if started.value is not None:
            with contextlib.suppress(OSError):
                for url in lake.list(started.value.fetch.target):
                    lake.remove(url)

    started.cancel = cancel
    running.start()
    head_start.begin(HEAD_START, started)
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
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> Ahead | None:
    """The fetch the command started for exactly this load (its log lines now go to ``log``),
    or None."""
    ahead: Ahead | None = head_start.take(HEAD_START, ahead_key(settings, load_range, page_size))
    if ahead is not None:
        log.info("taking over the fetch the command began into %s", ahead.fetch.target)
        ahead.log.attach(log)
    return ahead
