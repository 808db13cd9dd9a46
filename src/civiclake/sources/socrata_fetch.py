"""Any Socrata dataset's pages -> the raw zone, as received; a complete fetch is recorded.

The fetch only downloads: each page's body is checked (a complete JSON array, its rows
counted) and written to ``raw/socrata/<host>/<dataset>/run=<run id>/page-NNNNNN.json``, and its URL
is yielded as soon as it is written, so the stage step (``pipeline.engines``) reads each page
back from the lake while the next one downloads. The rows fetched are checked against
``count(*)`` for the same ``$where``; a mismatch fails the fetch (the flow fetches again once).

When every page is in, the count matched and the stage read every page (its rows counted
again), the flow writes a manifest ``fetch-<key>.json`` in the same folder. ``key`` names what
was asked: portal, dataset, table, the ``$where`` sent (with the high-water mark or window in
it) and the table's snapshot the run planned from. A later run
asking the same (a run killed after its fetch, before its commit, run again) stages those pages
instead of fetching them (``find_complete``), but only while the portal's ``rowsUpdatedAt``
(metadata read before every run) is the one recorded before that fetch began: the portal then
says no row changed since, so the pages are what it would serve now. A commit to the table in
between changes the snapshot, hence the key: older pages never replace newer rows. Metadata
without ``rowsUpdatedAt``, a changed dataset, or a page pruned away (``maintain``) means a fetch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from civiclake._private.prefetch import Prefetch
from civiclake._private.progress import Progress
from civiclake.errors import SourceError
from civiclake.lake import RAW_ZONE, Lake, host_of
from civiclake.sources.socrata import SYSTEM_SELECT, BodyError, SocrataClient

if TYPE_CHECKING:
    from civiclake.sources.socrata_dataset import DatasetSpec

logger = logging.getLogger("civiclake.sources.socrata")
Log = logging.Logger | logging.LoggerAdapter[Any]
T = TypeVar("T")

PAGE_ORDER = ":id"  # unique and stable: offset paging neither repeats nor skips rows
FETCH_ATTEMPTS = 2  # a count mismatch is fetched again once, then fails
MANIFEST_PREFIX = "fetch-"
_ID_KEY = re.compile(rb'":id"\s*:')


class CountMismatch(Exception):
    """The rows fetched differ from the portal's count: the pages are not a consistent answer."""


@dataclass(frozen=True)
class RawFetch:
    """A complete fetch in the raw zone (its manifest)."""

    key: str
    run_id: str
    where: str | None
    pages: tuple[str, ...]
    rows: int
    rows_updated_at: int | None
    fetched_at: str


@dataclass
class FetchProgress:
    """What a fetch did so far (the flow reports it): filled while pages are yielded."""

    rows: int = 0
    pages: int = 0
    retries: int = 0
    reused: bool = False
    urls: tuple[str, ...] = ()
    began: str = ""


def raw_dir(lake: Lake, spec: DatasetSpec, run_id: str) -> str:
    """``raw/socrata/<host>/<dataset>/run=<id>``: the layout of B&T's pages too."""
    return lake.raw_dir("socrata", host_of(spec.portal), spec.dataset_id, run_id=run_id)


def fetch_key(spec: DatasetSpec, where: str | None, table_snapshot: int | None) -> str:
    """What a fetch asked, as a short digest (see the module docstring)."""
    asked = [spec.portal, spec.dataset_id, spec.table, where, table_snapshot, PAGE_ORDER]
    return hashlib.sha256(json.dumps([*asked, SYSTEM_SELECT]).encode()).hexdigest()[:24]


def find_complete(lake: Lake, spec: DatasetSpec, key: str) -> RawFetch | None:
    """The newest complete fetch of ``key`` still valid for ``spec`` (same ``rowsUpdatedAt``,
    every page present), or None."""
    if spec.rows_updated_at is None:
        return None
    series = lake.join(RAW_ZONE, "socrata", host_of(spec.portal), spec.dataset_id)
    found: list[RawFetch] = []
    for folder in lake.list(series):
        url = f"{folder}/{MANIFEST_PREFIX}{key}.json"
        if not lake.exists(url):
            continue
        try:
            saved = json.loads(lake.read_bytes(url))
            fetch = RawFetch(**{**saved, "pages": tuple(saved["pages"])})
        except (ValueError, TypeError, KeyError):
            continue  # not a manifest of ours: ignored, fetched again
        if fetch.key == key and fetch.rows_updated_at == spec.rows_updated_at:
            found.append(fetch)
    for fetch in sorted(found, key=lambda f: f.fetched_at, reverse=True):
        if all(lake.exists(page) for page in fetch.pages):
            return fetch
    return None


@dataclass(frozen=True)
class PageQuery:
    """What a fetch asks the portal (rows of ``where``, ``page_size`` a page, the fields of
    ``select``) and the raw-zone ``folder`` its pages go to."""

    dataset_id: str
    folder: str
    where: str | None
    page_size: int
    select: str | None = SYSTEM_SELECT


def fetch_pages(
    client: SocrataClient,
    lake: Lake,
    query: PageQuery,
    *,
    expected: int,
    progress: FetchProgress,
    log: Log = logger,
) -> Iterator[str]:
    """The one pager of the Socrata source (any dataset, B&T's too): every row the query
    asks into its folder of the raw zone, ordered by ``:id``, each page's URL yielded once it
    is written; ``CountMismatch`` at the end if the rows are not ``expected``. Pages with the
    system fields are counted in their bytes (``_counted``: any dataset); B&T's plain fields
    are decoded by the client to count them. The flow records a reusable fetch
    (``record_complete``) once the stage has read every page."""
    began = datetime.now(UTC)
    for stale in lake.list(query.folder):  # a fetch again into the same run starts clean
        lake.remove(stale)
    retries_before = client.retries
    urls: list[str] = []
    rows = 0
    with Progress(f"fetch {query.dataset_id}", total=expected, logger=log) as bar:
        for page in client.iter_pages(
            query.dataset_id,
            order=PAGE_ORDER,
            where=query.where,
            page_size=query.page_size,
            select=query.select,
            decode=_counted if query.select == SYSTEM_SELECT else None,
        ):
            url = f"{query.folder}/page-{page.number:06d}.json"
            lake.write_bytes(url, page.body)
            rows += len(page.rows)
            bar.advance(len(page.rows))
            del page  # ~30 MB a body: gone before the next page downloads
            urls.append(url)
            log.debug("page %s written (%s rows so far)", url, f"{rows:,}")
            progress.rows, progress.pages = rows, len(urls)
            progress.retries = client.retries - retries_before
            yield url
    progress.retries = client.retries - retries_before
    if rows != expected:
        raise CountMismatch(f"fetched {rows:,} rows but the portal counts {expected:,}")
    progress.urls = tuple(urls)
    progress.began = began.isoformat()


@dataclass(frozen=True)
class RunningFetch:
    """A fetch under way: the rows the portal counted, its pages as they are written (a
    thread already paging), what it did so far."""

    expected: int
    pages: Prefetch[str]
    progress: FetchProgress
    folder: str


def start_fetch(
    client: SocrataClient,
    lake: Lake,
    query: PageQuery,
    *,
    depth: int = 1,
    close_client: bool = False,
    log: Log = logger,
    about: str = "",
) -> RunningFetch:
    """Count the rows the query asks, then page them (``fetch_pages``) in a thread at most
    ``depth`` pages ahead of the consumer (``close_client``: the client ends with the pages).
    ``about`` ends the log line (e.g. B&T's range)."""
    expected = client.count(query.dataset_id, where=query.where)
    log.info("%s %s: %s rows to fetch%s", query.dataset_id, client.base_url, f"{expected:,}", about)
    progress = FetchProgress()
    pages = fetch_pages(client, lake, query, expected=expected, progress=progress, log=log)
    if close_client:
        pages = _closing(pages, client)
    return RunningFetch(
        expected, Prefetch(pages, depth, name="civiclake-fetch"), progress, query.folder
    )


def fetch_counted(
    client: SocrataClient,
    lake: Lake,
    query: PageQuery,
    consume: Callable[[Iterable[str], int], T],
    *,
    incomplete: Callable[[str], str],
    depth: int = 1,
    first: RunningFetch | None = None,
    log: Log = logger,
    about: str = "",
) -> tuple[T, FetchProgress]:
    """The one count check of the Socrata source: fetch (``start_fetch``) and hand the pages
    to ``consume(pages, expected)`` as they are written (a stage). A page that came back cut
    (``BodyError``) or rows that are not the portal's count (``CountMismatch``, raised from
    the pager or by ``consume``) mean the answer was not consistent: what ``consume`` made is
    abandoned (it raised) and the whole fetch is made (and consumed) again, ``FETCH_ATTEMPTS``
    times in all; then ``SourceError(incomplete(last error))``. ``first``: the first attempt
    is a fetch already under way (B&T's, begun by the command)."""
    last = ""
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        running = first if attempt == 1 and first is not None else None
        running = running or start_fetch(client, lake, query, depth=depth, log=log, about=about)
        try:
            with running.pages as pages:
                return consume(pages, running.expected), running.progress
        except (CountMismatch, BodyError) as exc:
            last = str(exc)
            log.warning("%s (attempt %d/%d)", last, attempt, FETCH_ATTEMPTS)
    raise SourceError(incomplete(last))


def check_read_back(rows_read: int, expected: int) -> None:
    """The stage read back the rows the portal counted, or ``CountMismatch`` (a page changed
    in the lake, or the reader saw other rows than the pager counted)."""
    if rows_read != expected:
        raise CountMismatch(f"fetched {rows_read:,} rows but the portal counts {expected:,}")


def _closing(pages: Iterator[str], client: SocrataClient) -> Iterator[str]:
    with client:
        yield from pages


def record_complete(
    lake: Lake,
    spec: DatasetSpec,
    *,
    key: str,
    run_id: str,
    where: str | None,
    progress: FetchProgress,
) -> None:
    """Write the manifest of a fetch whose every page was staged and counted (reusable)."""
    manifest = RawFetch(
        key=key,
        run_id=run_id,
        where=where,
        pages=progress.urls,
        rows=progress.rows,
        rows_updated_at=spec.rows_updated_at,
        fetched_at=progress.began,
    )
    folder = raw_dir(lake, spec, run_id)
    lake.write_bytes(f"{folder}/{MANIFEST_PREFIX}{key}.json", json.dumps(asdict(manifest)).encode())


def _counted(body: bytes) -> range:
    """A page's rows, counted without decoding them (the stage decodes the page from the lake):
    every row of a ``$select=:*, *`` page has the key ``":id":`` once, and those bytes cannot
    occur inside a JSON string (its quotes are escaped), so counting them counts the rows
    (no copy of the page; a DuckDB parse to count took 0.3-0.6 s and ~220 MB a 30 MB page). A body
    that is not one whole array of objects (``[`` ... ``}]``, or ``[]``) is cut: retried. The
    stage's decode checks the count again (``rows_read`` against the fetch)."""
    head, tail = body[:64].lstrip()[:1], body[-64:].rstrip()
    last = tail[:-1].rstrip()[-1:]
    if head != b"[" or not tail.endswith(b"]") or last not in (b"}", b"["):
        raise BodyError(f"not a complete JSON array of rows ({len(body)} bytes)")
    return range(len(_ID_KEY.findall(body)))
