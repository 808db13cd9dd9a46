"""The load contract: the slice of a table a load replaces, as one value object.

A load deletes its slice and appends its rows in one commit, so a re-run replaces instead of
duplicating. The slice is a date/time window on a column (B&T days, TLC months), a set of row
ids (a Socrata incremental merge by ``:id``), or the whole table (a full refresh, which is how
rows deleted at the source disappear). Iceberg and warehouses take the same object.
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


Slice = WholeTable | Window | RowIds
