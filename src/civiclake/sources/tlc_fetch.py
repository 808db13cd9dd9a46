"""The fetch side of the TLC source: a month's file -> raw zone, downloaded (verified complete
before it becomes visible) or copied from disk (``--from-file``). The sibling of
``bnt_fetch`` and ``socrata_fetch``; the spec that reads the file is ``sources/tlc.py``."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import httpx

from civiclake.errors import SourceError
from civiclake.lake import RAW_ZONE, Lake
from civiclake.sources.tlc import NAMESPACE, Month

DEFAULT_BASE_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


def file_name(color: str, month: Month, extension: str = "csv.gz") -> str:
    return f"{color}_tripdata_{month}.{extension}"


def source_url(base_url: str, color: str, month: Month) -> str:
    """A month's URL: the course mirror's layout ``{base}/{color}/{color}_tripdata_YYYY-MM.csv.gz``,
    or a template with ``{color}``, ``{yyyy}``, ``{mm}`` placeholders, e.g. the official TLC
    Parquet files ``https://.../trip-data/{color}_tripdata_{yyyy}-{mm}.parquet``."""
    if "{" in base_url:
        return base_url.format(color=color, yyyy=f"{month.year:04d}", mm=f"{month.month:02d}")
    return f"{base_url.rstrip('/')}/{color}/{file_name(color, month)}"


# ---------------------------------------------------------------- download


class TransientDownloadError(SourceError):
    """Worth retrying: a 5xx/429, a timeout, a dropped connection, a cut-off body."""


@dataclass(frozen=True)
class Download:
    url: str
    raw_url: str
    bytes: int


FROM_FILE_DIR = "from-file"


def raw_url_for(lake: Lake, color: str, month: Month, url: str) -> str:
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    return lake.join(RAW_ZONE, NAMESPACE, color, str(month), name)


class _GzipCheck:
    """Decompresses as bytes arrive, only to prove the stream is whole (no data kept)."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def update(self, chunk: bytes) -> None:
        data = chunk
        while data:
            try:
                self._inflate.decompress(data, 0)
            except zlib.error as exc:
                raise SourceError(f"corrupt gzip data ({exc})") from None
            data = self._inflate.unused_data
            if data:  # a concatenated gzip member starts here
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self) -> None:
        if not self._inflate.eof:
            raise SourceError("truncated gzip file (no end-of-stream marker)")


def download(
    url: str,
    lake: Lake,
    raw_url: str,
    *,
    timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> Download:
    """Stream ``url`` into the raw zone; the file appears only once verified complete."""
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, transport=transport) as client,
            client.stream("GET", url) as response,
        ):
            status = response.status_code
            if status == 404:
                raise SourceError(f"not found (HTTP 404): {url}")
            if status in TRANSIENT_STATUS:
                raise TransientDownloadError(f"HTTP {status} from {url}")
            if status != 200:
                raise SourceError(f"HTTP {status} from {url}")
            declared = response.headers.get("Content-Length")
            check = _GzipCheck() if url.endswith(".gz") else None
            size = 0
            with lake.open_atomic(raw_url) as out:
                for chunk in response.iter_raw(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
                    size += len(chunk)
                    if check:
                        check.update(chunk)
                if declared is not None and int(declared) != size:
                    raise TransientDownloadError(
                        f"truncated download: {size:,} of {int(declared):,} bytes from {url}"
                    )
                if check:
                    check.finish()
    except httpx.TimeoutException:
        raise TransientDownloadError(f"timed out downloading {url}") from None
    except httpx.TransportError as exc:
        raise TransientDownloadError(
            f"connection failed for {url} ({type(exc).__name__})"
        ) from None
    if raw_url.endswith(".parquet"):
        _check_parquet(lake, raw_url)
    return Download(url=url, raw_url=raw_url, bytes=size)


def _check_parquet(lake: Lake, url: str) -> None:
    with lake.open(url) as handle:
        head = handle.read(4)
        handle.seek(-4, 2)
        tail = handle.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        lake.remove(url)
        raise SourceError(f"corrupt or truncated Parquet file: {url}")


FILE_TYPES = (".csv", ".csv.gz", ".parquet")


def stage_local_file(lake: Lake, path: str, color: str, month: Month) -> str:
    """``--from-file``: copy a file already on disk into the raw zone."""
    from civiclake.sources.local_file import copy_local_file

    name = path.rstrip("/").rsplit("/", 1)[-1]
    # its own folder: a download of the same month keeps its cached copy (same file name)
    url = lake.join(RAW_ZONE, NAMESPACE, color, str(month), FROM_FILE_DIR, name)
    return copy_local_file(lake, path, url, FILE_TYPES)
