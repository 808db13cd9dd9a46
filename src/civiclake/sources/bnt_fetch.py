"""The fetch side of the B&T source: load ranges and API -> raw zone, with light imports only.

Split from ``sources/bnt.py`` so a flow run reaches its first request without importing
PyArrow and PyIceberg (about 1.5 s on this machine); ``sources/bnt.py`` re-exports all of it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from civiclake._private.progress import Progress
from civiclake.errors import SourceError
from civiclake.lake import RAW_ZONE, Lake
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


# ---------------------------------------------------------------- load context and ranges


@dataclass(frozen=True)
class LoadRange:
    """Dates ``[start, stop)`` a load replaces."""

    start: date
    stop: date

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.stop.isoformat()}"

    @property
    def days(self) -> int:
        return (self.stop - self.start).days

    def months(self) -> list[str]:
        """Month partitions the range touches, as ``YYYY-MM``."""
        out: list[str] = []
        cursor = self.start.replace(day=1)
        last = self.stop - timedelta(days=1)
        while cursor <= last:
            out.append(cursor.strftime("%Y-%m"))
            cursor = (cursor + timedelta(days=32)).replace(day=1)
        return out

    def table_filter(self) -> BooleanExpression:
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

        return And(
            GreaterThanOrEqual(DATE_FIELD, self.start.isoformat()),
            LessThan(DATE_FIELD, self.stop.isoformat()),
        )

    def rejects_filter(self, load_key: str) -> BooleanExpression:
        """Rejects a reload replaces: dated inside the range, or recorded by the same load key."""
        from pyiceberg.expressions import EqualTo, Or

        return Or(self.table_filter(), EqualTo("load_range", load_key))


@dataclass(frozen=True)
class LoadContext:
    """Metadata stamped on every row of one load."""

    run_id: str
    source: str
    loaded_at: datetime
    range: LoadRange | None = None  # None: the range is the file's own (known after staging)

    @property
    def load_key(self) -> str:
        """What identifies a reload of the same input: its range, or the file it came from."""
        return str(self.range) if self.range else self.source


# ---------------------------------------------------------------- fetch: source -> raw zone


@dataclass(frozen=True)
class FetchResult:
    raw_urls: list[str]
    rows: int
    expected: int
    pages: int
    retries: int


def raw_dir(lake: Lake, source_host: str, dataset_id: str, run_id: str) -> str:
    return lake.join(RAW_ZONE, "socrata", source_host, dataset_id, f"run={run_id}")


def fetch_range(
    client: SocrataClient,
    lake: Lake,
    load_range: LoadRange,
    *,
    run_id: str,
    dataset_id: str = DATASET_ID,
    page_size: int = 50_000,
    attempts: int = 2,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> FetchResult:
    """Page the range into the raw zone; fail unless every row the portal counts arrived.

    Each page is written (atomically) as it arrives, so memory holds one page. When the rows
    fetched differ from ``count(*)`` (the portal changed underneath, or a page came back short),
    the whole range is fetched again, up to ``attempts`` times, then the run fails.
    """
    where = date_range_where(DATE_FIELD, load_range.start, load_range.stop)
    host = client.base_url.split("://", 1)[-1].replace(":", "_").replace("/", "_")
    target = raw_dir(lake, host, dataset_id, run_id)
    mismatch = ""
    for attempt in range(1, attempts + 1):
        for stale in lake.list(target):  # a retried fetch starts from a clean directory
            lake.remove(stale)
        expected = client.count(dataset_id, where=where)
        log.info(
            "%s %s: %s rows to fetch for %s",
            dataset_id,
            client.base_url,
            f"{expected:,}",
            load_range,
        )
        urls: list[str] = []
        rows = 0
        with Progress(f"fetch {dataset_id}", total=expected, logger=log) as progress:
            for page in client.iter_pages(
                dataset_id, order=PAGE_ORDER, where=where, page_size=page_size
            ):
                url = f"{target}/page-{page.number:06d}.json"
                lake.write_bytes(url, page.body)
                urls.append(url)
                rows += len(page.rows)
                progress.advance(len(page.rows))
                del page
                if len(urls) % GC_EVERY_PAGES == 0:
                    # httpx keeps each response in a reference cycle: without a collection,
                    # every page body would stay in memory until the fetch ends
                    gc.collect()
        if rows == expected:
            return FetchResult(urls, rows, expected, len(urls), client.retries)
        recount = client.count(dataset_id, where=where)
        if rows == recount:  # the source changed while we paged; what we hold is complete now
            return FetchResult(urls, rows, recount, len(urls), client.retries)
        mismatch = f"fetched {rows:,} rows but the portal counts {recount:,}"
        log.warning("%s for %s (attempt %d/%d)", mismatch, load_range, attempt, attempts)
    raise SourceError(f"incomplete fetch of {dataset_id} for {load_range}: {mismatch}")
