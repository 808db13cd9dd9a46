"""``RangeLoad``: one transaction replacing a window with rows handed over while they are made."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import psycopg
import pyarrow as pa

from civiclake._private.prefetch import Prefetch
from civiclake.errors import CivicLakeError
from civiclake.slices import Window
from civiclake.warehouse._arrow_sql import check_file_schema, qualified, quote_ident, split_table
from civiclake.warehouse._sql import Load, ReplacesRange
from civiclake.warehouse.postgres.connection import CONNECT_TIMEOUT_S, load_error
from civiclake.warehouse.postgres.encoding import ENCODERS

if TYPE_CHECKING:
    from civiclake.warehouse.postgres.warehouse import PostgresWarehouse

STREAM_DEPTH = 1  # RangeLoad: batches queued ahead of the COPY thread (bounded memory)
QUEUE_POLL_S = 0.1


class RangeLoad(ReplacesRange):
    """One transaction replacing a range of a table with rows handed over while they are made.

    Opened by ``PostgresWarehouse.range_load``. Entering starts a COPY thread: it begins the
    transaction's work (the table's advisory lock, CREATE TABLE if missing, DELETE of the
    range) and then streams every batch given to ``write`` through one ``COPY FROM STDIN``,
    encoding in a second thread (``Prefetch``) while the previous chunk is sent. The caller's
    thread only queues batches (bounded: ``write`` waits while the queue is full), so it keeps
    producing while PostgreSQL ingests. Leaving the block commits after the COPY has ended;
    an exception in the block, or a COPY that failed, rolls back: readers see the old range
    until the commit and never a part of the new one.
    """

    def __init__(
        self,
        warehouse: PostgresWarehouse,
        table: str,
        schema: pa.Schema,
        create: str,
        replaced: Window,
    ) -> None:
        self.table = table
        self.schema = schema
        self._warehouse = warehouse
        self._begin = (table, schema, create, replaced)
        columns = ", ".join(quote_ident(name) for name in schema.names)
        self._statement = (
            f"COPY {qualified(table)} ({columns}) FROM STDIN (FORMAT {warehouse.copy_format})"
        )
        self._queue: queue.Queue[pa.Table | pa.RecordBatch | None] = queue.Queue(STREAM_DEPTH)
        self._aborted = threading.Event()
        self._state = threading.Lock()  # guards the phase against a concurrent cancel
        self._phase = "idle"  # idle -> prepare -> copy -> done
        self._thread = threading.Thread(target=self._run, name="civiclake-range-load", daemon=True)
        self._error: BaseException | None = None
        self._checked: pa.Schema | None = None
        self._stack = contextlib.ExitStack()
        self._conn: psycopg.Connection[Any] | None = None
        self._rows = 0
        self._finished = False
        self._entered = False

    @property
    def rows(self) -> int:
        """Rows the stream's COPY loaded (known once ``finish`` returned)."""
        return self._rows

    def __enter__(self) -> Self:
        with self._stack as stack:
            stack.enter_context(self._warehouse._lock)
            try:
                self._warehouse._ensure_schema(split_table(self.table)[0])
                self._conn = self._warehouse._connection
                stack.enter_context(self._conn.transaction())
            except psycopg.Error as exc:
                raise load_error(self.table, exc) from exc
            self._thread.start()
            self._entered = True
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.finish()
            except BaseException as failure:
                self._close(type(failure), failure, failure.__traceback__)
                raise
        else:
            self._abort()
        self._close(exc_type, exc, tb)

    def write(self, batch: pa.Table | pa.RecordBatch) -> None:
        """Queue rows for the COPY (columns by name, the table's types); waits while full."""
        if self._finished or not self._entered:
            raise CivicLakeError(f"load of {self.table}: write outside an open stream")
        if batch.schema != self._checked:
            check_file_schema("a batch", batch.schema, self.schema, "postgres")
            self._checked = batch.schema
        if batch.schema.names != self.schema.names:
            batch = batch.select(self.schema.names)
        if batch.num_rows:
            self._put(batch)

    def finish(self) -> int:
        """End the COPY (all rows written) and return its row count; the commit waits."""
        if not self._finished:
            self._put(None)
            self._thread.join()
            self._finished = True
            if self._error is not None:
                raise load_error(self.table, self._error) from self._error
        return self._rows

    def _replace(self, load: Load) -> int:
        """``PostgresWarehouse.replace`` inside this transaction, after the stream."""
        table, schema, parquet_urls, lake, replaced, evolve = load
        create = self._warehouse.checked_create_sql(table, schema, parquet_urls, lake, replaced)
        self.finish()
        assert self._conn is not None
        warehouse = self._warehouse
        try:
            warehouse._ensure_schema(split_table(table)[0])  # a savepoint of this transaction
            with self._conn.cursor() as cur:
                warehouse._begin_replace(cur, table, schema, create, replaced, evolve=evolve)
                return warehouse._copy_files(cur, table, parquet_urls, lake)
        except (psycopg.Error, OSError, pa.ArrowException) as exc:
            raise load_error(table, exc) from exc

    def _put(self, item: pa.Table | pa.RecordBatch | None) -> None:
        while True:
            if not self._thread.is_alive():  # the COPY failed: say why, now
                self._thread.join()
                self._finished = True
                error = self._error or CivicLakeError("the COPY thread stopped")
                raise load_error(self.table, error) from error
            try:
                self._queue.put(item, timeout=QUEUE_POLL_S)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        """The COPY thread: begin the replace, then stream the queued batches."""
        assert self._conn is not None
        try:
            with self._conn.cursor() as cur:
                with self._state:
                    if self._aborted.is_set():
                        return
                    self._phase = "prepare"
                self._warehouse._begin_replace(cur, *self._begin)
                with self._state:
                    self._phase = "copy"
                encode = ENCODERS[self._warehouse.copy_format]
                with (
                    cur.copy(self._statement) as copy,
                    Prefetch(encode(self._batches()), name="civiclake-copy") as chunks,
                ):
                    for chunk in chunks:
                        copy.write(chunk)
                self._rows = max(cur.rowcount, 0)
        except BaseException as exc:
            self._error = exc
        finally:
            with self._state:
                self._phase = "done"

    def _batches(self) -> Iterator[pa.RecordBatch]:
        """The queued rows as record batches of about ``batch_rows``, until the end mark."""
        while True:
            if self._aborted.is_set():
                raise Aborted(f"load of {self.table} abandoned")
            try:
                item = self._queue.get(timeout=QUEUE_POLL_S)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, pa.Table):
                item = item.combine_chunks()
                yield from item.to_batches(max_chunksize=self._warehouse.batch_rows)
            else:
                yield item

    def _abort(self) -> None:
        """The producer failed: stop the COPY thread (cancel a lock wait or a DELETE)."""
        self._aborted.set()
        with self._state:
            if self._phase == "prepare" and self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.cancel_safe(timeout=CONNECT_TIMEOUT_S)
        self._thread.join()
        self._finished = True

    def _close(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit (no error) or roll back, then release the warehouse."""
        try:
            self._stack.__exit__(exc_type, exc, tb)
        except psycopg.Error as failure:
            if exc is not None:
                raise exc from None
            raise load_error(self.table, failure) from failure


class Aborted(Exception):
    """The producer of a ``RangeLoad`` failed; the COPY is abandoned (and rolled back)."""
