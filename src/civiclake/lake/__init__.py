"""The lake: a directory tree behind an fsspec URL (file:// default; abfs://, s3://, gs://).

Nothing here knows about local paths: every location is a URL and every write goes through
fsspec, so switching the lake is a settings change. Writes are atomic: a file is never visible
under its final name half-written (local: temp name + rename; object stores: the upload is
completed only when the write succeeded, and abandoned otherwise).
Each kind of storage has a backend module (``local``, ``azure``, ``s3``, ``gcs``) of the same
shape: how its credentials are found and handed to fsspec and PyIceberg, and how its errors read.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import fsspec
from fsspec import AbstractFileSystem

from civiclake._private.extras import require
from civiclake._private.net import unreachable
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake._backend import LakeBackend
from civiclake.lake.azure import AzureBackend
from civiclake.lake.gcs import GCSBackend
from civiclake.lake.local import LocalBackend, MemoryBackend
from civiclake.lake.s3 import S3Backend

if TYPE_CHECKING:
    import pyarrow as pa

RAW_ZONE = "raw"
STAGE_ZONE = "stage"
PROBE_DIR = "_civiclake"
COPY_CHUNK_BYTES = 8 * 1024 * 1024

BACKENDS: tuple[LakeBackend, ...] = (
    LocalBackend(),
    MemoryBackend(),
    AzureBackend(),
    S3Backend(),
    GCSBackend(),
)


def host_of(url: str) -> str:
    """A source URL's host (and port, path) as one folder name of the raw zone."""
    return url.split("://", 1)[-1].replace(":", "_").replace("/", "_")


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def backend_for(url: str) -> LakeBackend:
    """The backend serving ``url``; a clear error for schemes civiclake does not support or
    whose driver is not installed."""
    scheme = scheme_of(url)
    for backend in BACKENDS:
        if scheme in backend.schemes:
            if backend.driver:
                require(
                    backend.driver,
                    package=backend.driver,
                    extra=backend.extra,
                    needed_by=f"the lake {url}",
                )
            return backend
    known = ", ".join(f"{b.schemes[0]}://" for b in BACKENDS)
    raise ParameterError(f"unsupported lake URL {url!r}: use one of {known}")


class Lake:
    """A root URL plus the filesystem that serves it."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        self.backend = backend_for(self.url)
        self.backend.prepare()
        self._options: Mapping[str, Any] = storage_options
        self.fs: AbstractFileSystem
        try:
            self.fs, self._root = fsspec.core.url_to_fs(
                self.url, **self.backend.storage_options(storage_options)
            )
        except Exception as exc:  # drivers check credentials when the filesystem is built
            if self.backend.credential_source(storage_options) is None:
                raise CivicLakeError(
                    f"lake {self.url}: {self.backend.missing_credentials()}"
                ) from None
            raise CivicLakeError(self.explain(exc)) from None
        self._local = "file" in _protocols(self.fs)

    def iceberg_properties(self) -> dict[str, str]:
        """PyIceberg FileIO properties reaching this lake with the same credentials."""
        return self.backend.iceberg_properties(self._options)

    def explain(self, exc: BaseException) -> str:
        """One line (no secrets) saying why an operation on this lake failed."""
        return f"lake {self.url}: {self.backend.explain(exc, self.url)}"

    def credential_source(self) -> str | None:
        """Where this lake's credentials come from (names, never values); None: none found."""
        return self.backend.credential_source(self._options)

    def check_credentials(self) -> None:
        """Fail with what to set when the store's credential chain finds nothing."""
        if self.credential_source() is None:
            raise CivicLakeError(f"lake {self.url}: {self.backend.missing_credentials()}")

    def check_endpoint(self) -> None:
        """Fail in seconds when nothing listens at the endpoint: the SDKs retry a refused
        connection with backoff for half a minute or more before giving up."""
        endpoint = self.backend.endpoint(self._options)
        dead = unreachable(endpoint) if endpoint else None
        if dead:
            raise CivicLakeError(
                f"lake {self.url}: cannot connect to the {self.backend.name} endpoint "
                f"{dead} ({self.backend.endpoint_hint()})"
            )

    def check_writable(self) -> None:
        """Write, read back and delete a small object, so a run fails before writing anything
        when the credentials, the container or the endpoint are wrong."""
        if self._local:  # no probe file: a user's folder is not created by a failed run
            existing = Path(self._path(self.url))
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                raise CivicLakeError(f"lake {self.url}: {existing} is not a writable folder")
            return
        self.check_credentials()
        self.check_endpoint()
        probe = self.join(PROBE_DIR, f"probe-{uuid.uuid4().hex}")
        payload = b"civiclake write probe"
        try:
            self.write_bytes(probe, payload)
            if self.read_bytes(probe) != payload:
                raise CivicLakeError(f"lake {self.url}: a written object read back different")
            self.remove(probe)
        except CivicLakeError:
            raise
        except Exception as exc:
            raise CivicLakeError(self.explain(exc)) from None

    def join(self, *parts: str) -> str:
        """URL of a location under the lake root."""
        return "/".join([self.url, *(p.strip("/") for p in parts)])

    def raw_dir(self, *parts: str, run_id: str) -> str:
        """The raw-zone folder of one run's fetch: ``raw/<source>/<...>/run=<id>``, the one
        layout of every source (``maintain`` prunes such folders by age)."""
        return self.join(RAW_ZONE, *parts, f"run={run_id}")

    def _path(self, url: str) -> str:
        return self.fs._strip_protocol(url)  # type: ignore[no-any-return]

    def local_path(self, url: str) -> str | None:
        """The OS path behind ``url`` when the lake is on the local disk (for native readers)."""
        return self._path(url) if self._local else None

    def exists(self, url: str) -> bool:
        path = self._path(url)
        if self.fs.exists(path):
            return True
        self._forget_listing(path)
        return bool(self.fs.exists(path))

    def _forget_listing(self, path: str) -> None:
        """Drop the cached listing of ``path``'s directory: another writer (PyIceberg's own
        FileIO writing a table's data files) may have added the file since it was listed."""
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])

    def write_bytes(self, url: str, data: bytes) -> None:
        """Write a whole object atomically."""
        with self.open_atomic(url) as out:
            out.write(data)

    @contextmanager
    def open_atomic(self, url: str) -> Iterator[IO[bytes]]:
        """A binary writer whose content appears under ``url`` only if the block completes."""
        path = self._path(url)
        if not self.backend.renames_atomically:
            # An object store shows an object only when its upload completes (one PUT, the
            # multipart or resumable upload finished, the block list committed). fsspec's
            # files complete the upload on close, even when the block raised: abandon it.
            out = self.fs.open(path, "wb")
            try:
                yield out
            except BaseException:
                _abandon_upload(out)
                raise
            out.close()
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
        path = self._path(url)
        try:
            return self.fs.open(path, mode)  # type: ignore[no-any-return]
        except FileNotFoundError:
            if "r" not in mode:
                raise
            self._forget_listing(path)
            return self.fs.open(path, mode)  # type: ignore[no-any-return]

    def list(self, url: str) -> list[str]:
        """URLs of the files directly under ``url`` (hidden temp files excluded), sorted."""
        path = self._path(url)
        if not self.fs.exists(path):
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        return [f"{url.rstrip('/')}/{name}" for name in names if not name.startswith(".")]

    def remove(self, url: str) -> None:
        self.fs.rm(self._path(url))


def _abandon_upload(out: IO[bytes]) -> None:
    """Cancel an unfinished upload so nothing appears under its name: s3fs aborts the multipart
    upload, gcsfs deletes the resumable session, adlfs never commits the staged blocks (Azure
    drops uncommitted blocks by itself). Marked closed first, so neither ``close()`` nor the
    garbage collector flushes the buffer as a complete object (reproduced on moto)."""
    discard = getattr(out, "discard", None)
    # A failed cancel must not hide the write's own error: the unfinished upload is invisible
    # anyway, and the stores expire it (the GCS emulator answers 501 to the cancel).
    with suppress(Exception):
        if callable(discard):
            discard()
    out.closed = True  # type: ignore[misc]  # fsspec's buffered files: skip the final flush
    with suppress(Exception):
        out.close()  # releases the driver's client (adlfs); writes nothing once closed


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
