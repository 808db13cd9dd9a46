"""The load contract: the slice of a table a load replaces, as one value object.

A load deletes its slice and appends its rows in one commit, so a re-run replaces instead of
duplicating. The slice is a date/time window on a column (B&T days, TLC months), a set of row
ids (a Socrata incremental merge by ``:id``), a set of windows on one column (the days a file
actually holds: a file with days 1 and 14 replaces those two days, never 2-13), or the whole
table (a full refresh, which is how rows deleted at the source disappear). Iceberg and
warehouses take the same object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PyIceberg is imported only by the Iceberg writer that asks for a filter
    from pyiceberg.expressions import BooleanExpression


@dataclass(frozen=True)
class WholeTable:
    """Every row: a full refresh."""

    def iceberg_filter(self) -> BooleanExpression:
        from pyiceberg.expressions import AlwaysTrue

        return AlwaysTrue()

    def __str__(self) -> str:
        return "all"


@dataclass(frozen=True)
class Window:
    """``start <= column < stop``."""

    column: str
    start: date | datetime
    stop: date | datetime

    def iceberg_filter(self) -> BooleanExpression:
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

        return And(
            GreaterThanOrEqual(self.column, self.start.isoformat()),
            LessThan(self.column, self.stop.isoformat()),
        )

    def __str__(self) -> str:
        return f"{self.column} in [{self.start.isoformat()}, {self.stop.isoformat()})"


@dataclass(frozen=True)
class RowIds:
    """The rows whose ``column`` is one of ``ids`` (those ids are replaced, new ones added)."""

    column: str
    ids: frozenset[str]

    @classmethod
    def of(cls, column: str, ids: Iterable[str]) -> RowIds:
        return cls(column, frozenset(ids))

    def iceberg_filter(self) -> BooleanExpression:
        from pyiceberg.expressions import AlwaysFalse, In

        if not self.ids:
            return AlwaysFalse()  # nothing to delete
        return In(self.column, set(self.ids))

    def __str__(self) -> str:
        return f"{len(self.ids)} ids of {self.column}"


@dataclass(frozen=True)
class Windows:
    """The union of disjoint windows on one column: ``start <= column < stop`` for any of them.

    What a file load replaces: the days (or months) the file actually holds, not the span
    between its first and last date. Build it with :meth:`of`, which sorts the windows and
    merges adjacent or overlapping ones, so equal coverage gives an equal value.
    """

    column: str
    windows: tuple[Window, ...]

    @classmethod
    def of(cls, column: str, spans: Iterable[tuple[date | datetime, date | datetime]]) -> Windows:
        merged: list[list[date | datetime]] = []
        for start, stop in sorted(spans):
            if not start < stop:
                raise ValueError(f"empty window [{start}, {stop}) on {column}")
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return cls(column, tuple(Window(column, a, b) for a, b in merged))

    @classmethod
    def of_days(cls, column: str, days: Iterable[date]) -> Windows:
        """One window ``[day, day + 1)`` per day (adjacent days merge into one window)."""
        from datetime import timedelta

        return cls.of(column, ((d, d + timedelta(days=1)) for d in days))

    @property
    def start(self) -> date | datetime:
        return self.windows[0].start

    @property
    def stop(self) -> date | datetime:
        return self.windows[-1].stop

    def iceberg_filter(self) -> BooleanExpression:
        from pyiceberg.expressions import AlwaysFalse, Or

        if not self.windows:
            return AlwaysFalse()  # nothing to delete
        expr = self.windows[0].iceberg_filter()
        for window in self.windows[1:]:
            expr = Or(expr, window.iceberg_filter())
        return expr

    def __str__(self) -> str:
        if len(self.windows) == 1:
            return str(self.windows[0])
        spans = ", ".join(f"[{w.start.isoformat()}, {w.stop.isoformat()})" for w in self.windows)
        return f"{self.column} in {spans}"


Slice = WholeTable | Window | RowIds | Windows
