"""The fetch side of the B&T source: load ranges and API -> raw zone, with light imports only.

Split from ``sources/bnt.py`` so a flow run reaches its first request without importing
PyArrow and PyIceberg (about 1.5 s on this machine); ``sources/bnt.py`` re-exports all of it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from civiclake._private.progress import Progress
from civiclake.errors import SourceError
from civiclake.lake import Lake, host_of
from civiclake.sources.socrata import SocrataClient, date_range_where

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression

logger = logging.getLogger("civiclake.sources.bnt")

DATASET_ID = "qzve-kjga"
DATE_FIELD = "date"
# ':id' is Socrata's row id: unique and stable, so offset paging neither repeats nor skips rows.
PAGE_ORDER = ":id"
GC_EVERY_PAGES = 4
TABLE = "mta.bnt_traffic_hourly"
REJECTS_TABLE = "mta.bnt_traffic_hourly_rejects"
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
) -> tuple[FetchResult, T]:
    """Page the range into the raw zone, each page handed to ``consume`` as it is written
    (e.g. a stage); fail unless every row the portal counts arrived.

    When the rows fetched differ from ``count(*)`` (the portal changed underneath, or a page
    came back short), what ``consume`` made is ``discard``-ed and the whole range is fetched
    (and consumed) again, up to ``attempts`` times, then the run fails.
    """
    fetch: PageFetch | None = None
    for attempt in range(1, attempts + 1):
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
