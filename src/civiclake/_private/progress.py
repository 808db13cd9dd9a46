"""Progress on long work: a live bar on a terminal, periodic log lines otherwise (CI, UI)."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

LOG_EVERY_SECONDS = 10.0


class Progress:
    """``with Progress("fetch", total=n) as p: p.advance(k)`` — quiet when stderr is not a TTY."""

    def __init__(
        self,
        description: str,
        *,
        total: int | None = None,
        unit: str = "rows",
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._logger = logger or logging.getLogger("civiclake")
        self._bar: Any = None
        self._task: Any = None
        self._last_log = 0.0

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            columns = [
                TextColumn("{task.description}", markup=False),  # file names verbatim
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
            ]
            if self.unit == "bytes":
                columns[2] = TransferSpeedColumn()
            self._bar = RichProgress(*columns, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        self._last_log = time.monotonic()
        return self

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        elif time.monotonic() - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = time.monotonic()
            of = f"/{self.total:,}" if self.total is not None else ""
            self._logger.info("%s: %s%s %s", self.description, f"{self.done:,}", of, self.unit)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
