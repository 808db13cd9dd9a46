"""The lake: a directory tree behind an fsspec URL (file:// today; abfs://, s3://, gs:// by config).

Nothing here knows about local paths: every location is a URL and every write goes through
fsspec, so switching the lake is a settings change. Writes are atomic: a file is never visible
under its final name half-written (local: temp name + rename; object stores: one PUT).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import fsspec
from fsspec import AbstractFileSystem

if TYPE_CHECKING:
    import pyarrow as pa

RAW_ZONE = "raw"
STAGE_ZONE = "stage"
COPY_CHUNK_BYTES = 8 * 1024 * 1024


class Lake:
    """A root URL plus the filesystem that serves it."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        self.fs: AbstractFileSystem
        self.fs, self._root = fsspec.core.url_to_fs(self.url, **storage_options)
        self._local = "file" in _protocols(self.fs)

    def join(self, *parts: str) -> str:
        """URL of a location under the lake root."""
        return "/".join([self.url, *(p.strip("/") for p in parts)])

    def _path(self, url: str) -> str:
        return self.fs._strip_protocol(url)  # type: ignore[no-any-return]

    def local_path(self, url: str) -> str | None:
        """The OS path behind ``url`` when the lake is on the local disk (for native readers)."""
        return self._path(url) if self._local else None

    def exists(self, url: str) -> bool:
        return bool(self.fs.exists(self._path(url)))

    def write_bytes(self, url: str, data: bytes) -> None:
        """Write a whole object atomically."""
        with self.open_atomic(url) as out:
            out.write(data)

    @contextmanager
    def open_atomic(self, url: str) -> Iterator[IO[bytes]]:
        """A binary writer whose content appears under ``url`` only if the block completes."""
        path = self._path(url)
        if not self._local:
            # An object store PUT is atomic: readers see the old object or the whole new one.
            with self.fs.open(path, "wb") as out:
                yield out
            return
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open(tmp, "wb") as out:
                yield out
            self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    def copy_from(self, source: str, url: str) -> None:
        """Stream a file (any fsspec URL or local path) into the lake atomically."""
        with fsspec.open(source, "rb") as src, self.open_atomic(url) as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK_BYTES)

    def read_bytes(self, url: str) -> bytes:
        return self.fs.cat_file(self._path(url))  # type: ignore[no-any-return]

    def open(self, url: str, mode: str = "rb") -> IO[Any]:
        return self.fs.open(self._path(url), mode)  # type: ignore[no-any-return]

    def list(self, url: str) -> list[str]:
        """URLs of the files directly under ``url`` (hidden temp files excluded), sorted."""
        path = self._path(url)
        if not self.fs.exists(path):
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        return [f"{url.rstrip('/')}/{name}" for name in names if not name.startswith(".")]

    def remove(self, url: str) -> None:
        self.fs.rm(self._path(url))


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def iter_table_chunks(lake: Lake, url: str, *, chunk_rows: int = 250_000) -> Iterator[pa.Table]:
    """Read a Parquet (``.parquet``) or Arrow IPC (``.arrow``) file of the lake back in chunks
    of about ``chunk_rows`` rows, so a load's memory is bounded by the chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with lake.open(url) as handle:
        if url.endswith(".arrow"):
            reader = pa.ipc.open_file(handle)
            batches: Iterator[pa.RecordBatch] = (
                reader.get_batch(i) for i in range(reader.num_record_batches)
            )
        else:
            batches = pq.ParquetFile(handle).iter_batches(batch_size=65_536)
        yield from rebatch(batches, chunk_rows)


def rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Gather small record batches into tables of at least ``rows`` rows (the last may be
    smaller): readers stream in small pieces for bounded memory, writers want big ones."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield pa.Table.from_batches(pending)
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending)
