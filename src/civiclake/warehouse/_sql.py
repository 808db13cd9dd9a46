"""What every warehouse shares: the slice as SQL, the checks before a load, the context manager.

The slice SQL is written once here (``slice_condition``); each warehouse only says how it binds
a value (a ``?``/``%s`` parameter, or a typed literal in a BigQuery script) and how it matches a
set of row ids (an Arrow view, an array parameter, a staging table).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Self

from civiclake.errors import CivicLakeError
from civiclake.slices import RowIds, Slice, WholeTable, Window, Windows
from civiclake.warehouse import Replaces
from civiclake.warehouse._arrow_sql import (
    Dialect,
    check_file_schema,
    check_slice,
    create_table_sql,
    parquet_schema,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from civiclake.lake import Lake

Bind = Callable[[date | datetime], str]
"""A window bound as SQL: a placeholder whose value the caller collects, or a literal."""
Member = Callable[[str, RowIds], str]
"""``column IN (the slice's ids)`` as SQL, for a quoted column and a non-empty ``RowIds``."""


def slice_condition(
    replaced: Slice, quote: Callable[[str], str], bind: Bind, member: Member
) -> str | None:
    """The WHERE condition of the rows a slice replaces; None when it holds no row."""
    if isinstance(replaced, WholeTable):
        return "TRUE"
    if isinstance(replaced, Window):
        column = quote(replaced.column)
        return f"{column} >= {bind(replaced.start)} AND {column} < {bind(replaced.stop)}"
    if isinstance(replaced, Windows):
        parts = [slice_condition(w, quote, bind, member) for w in replaced.windows]
        return " OR ".join(f"({part})" for part in parts) or None
    return member(quote(replaced.column), replaced) if replaced.ids else None


def range_column(replaced: Slice) -> str | None:
    """The date/time column a slice ranges over (worth an index or a partitioning)."""
    return replaced.column if isinstance(replaced, (Window, Windows)) else None


class Load(NamedTuple):
    """One ``replace`` call's arguments, as its implementation (``_replace``) gets them."""

    table: str
    schema: pa.Schema
    parquet_urls: list[str]
    lake: Lake
    replaced: Slice
    evolve: bool


class ReplacesRange(Replaces):
    """What every warehouse and streaming load shares: the contract's signature, written
    once (``replace`` hands a ``Load`` to the subclass's ``_replace``), and ``replace_range``,
    the ``Window`` shorthand."""

    def replace(
        self,
        table: str,
        schema: pa.Schema,
        parquet_urls: list[str],
        lake: Lake,
        replaced: Slice,
        *,
        evolve: bool = False,
    ) -> int:
        """``Replaces.replace``; what it does is the subclass's ``_replace``."""
        return self._replace(Load(table, schema, parquet_urls, lake, replaced, evolve))

    def _replace(self, load: Load) -> int:
        raise NotImplementedError

    def replace_range(
        self,
        table: str,
        schema: pa.Schema,
        parquet_urls: list[str],
        lake: Lake,
        *,
        column: str,
        start: datetime | date,
        stop: datetime | date,
    ) -> int:
        """Delete ``start <= column < stop`` and load the files, in one transaction."""
        return self.replace(table, schema, parquet_urls, lake, Window(column, start, stop))


class BaseWarehouse(ReplacesRange):
    """The shared half of every warehouse: the shorthand, and the context manager that closes
    it."""

    name: ClassVar[str]

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SqlWarehouse(BaseWarehouse):
    """A warehouse spoken to in SQL with the shared Arrow -> SQL mapping."""

    dialect: ClassVar[Dialect]
    label: ClassVar[str]  # the database's name in messages ("DuckDB", "PostgreSQL")

    def checked_create_sql(
        self, table: str, schema: pa.Schema, parquet_urls: list[str], lake: Lake, replaced: Slice
    ) -> str:
        """The table's CREATE statement, once the slice and every file are checked: a missing
        or foreign file fails before any transaction begins."""
        check_slice(table, schema, replaced)
        for url in parquet_urls:
            check_file_schema(url, parquet_schema(lake, url), schema, self.dialect)
        return create_table_sql(table, schema, self.dialect)

    def check_columns(self, table: str, schema: pa.Schema, existing: dict[str, str]) -> None:
        """An existing table made from an older schema: say so instead of a load error."""
        missing = sorted(set(schema.names) - set(existing))
        if missing:
            raise CivicLakeError(
                f"table {table} in {self.label} lacks columns {missing}: "
                "migrate or drop it, then reload"
            )
