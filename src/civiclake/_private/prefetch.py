"""Produce the next items of an iterator in a thread while the caller works on the current one.

Used where one side waits on I/O that releases the GIL: the next Socrata page downloads while
the current one is typed and written; the next COPY chunk is encoded while the current one is
sent. The queue is short (bounded memory); leaving the block stops the thread, whatever happened.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


class Prefetch(Generic[T]):
    """``with Prefetch(items, depth=2) as ahead: for item in ahead: ...``"""

    def __init__(self, items: Iterable[T], depth: int = 2, *, name: str = "civiclake-prefetch"):
        self._items = items
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put((True, item)):
                    return
            self._put((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))
        finally:
            close = getattr(self._items, "close", None)  # a generator: its `with` blocks end
            if close is not None:
                close()

    def _put(self, item: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            more, item = self._queue.get()
            if more:
                yield item
            elif item is None:
                return
            else:
                raise item

    def start(self) -> None:
        """Start producing now (``with`` starts a producer that was not started yet)."""
        if self._thread.ident is None:
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the producer; wait up to ``timeout`` for it (an item it is producing, e.g. a
        page downloading, finishes first)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
