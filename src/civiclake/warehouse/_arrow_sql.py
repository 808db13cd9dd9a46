"""Arrow -> SQL: the column types, identifiers and checks every warehouse shares.

One mapping for every destination (only the spelling differs), so a table loads with the same
types into DuckDB, PostgreSQL and BigQuery, and a Parquet file is checked against it before
anything is written: a mismatch is one clear error instead of a cast failure half-way through a
COPY.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake
from civiclake.slices import RowIds, Slice, Window, Windows

Dialect = Literal["duckdb", "postgres", "bigquery"]

_INTEGERS: dict[pa.DataType, str] = {
    pa.int8(): "SMALLINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
}
_SPELLING: dict[Dialect, dict[str, str]] = {
    "duckdb": {"DOUBLE PRECISION": "DOUBLE", "TEXT": "VARCHAR", "NUMERIC": "DECIMAL"},
    "postgres": {},
    "bigquery": {
        "SMALLINT": "INT64",
        "INTEGER": "INT64",
        "BIGINT": "INT64",
        "DOUBLE PRECISION": "FLOAT64",
        "TEXT": "STRING",
        "BOOLEAN": "BOOL",
        "TIMESTAMP": "DATETIME",  # wall time (UTC, as in the lake)
        "TIMESTAMPTZ": "TIMESTAMP",  # an instant
    },
}


def sql_type(dtype: pa.DataType, dialect: Dialect) -> str:
    """The SQL column type of an Arrow type; raises CivicLakeError for types with no mapping."""
    generic = _generic_type(dtype)
    if generic is not None and dialect == "bigquery":
        generic = _bigquery_numeric(generic)
    if generic is None:
        raise CivicLakeError(f"no {dialect} column type for Arrow type {dtype}")
    spelling = _SPELLING[dialect]
    head, paren, rest = generic.partition("(")
    return spelling.get(head, head) + paren + rest


def _bigquery_numeric(generic: str) -> str | None:
    """BigQuery's NUMERIC holds 29 integer and 9 fractional digits; BIGNUMERIC 38 and 38."""
    if not generic.startswith("NUMERIC("):
        return generic
    precision, scale = (int(n) for n in generic[len("NUMERIC(") : -1].split(","))
    if 0 <= scale <= 9 and precision - scale <= 29:
        return generic
    if 0 <= scale <= 38 and precision - scale <= 38:
        return "BIG" + generic
    return None


def _generic_type(dtype: pa.DataType) -> str | None:
    if pa.types.is_dictionary(dtype):
        return _generic_type(dtype.value_type)
    if dtype in _INTEGERS:
        return _INTEGERS[dtype]
    if pa.types.is_float64(dtype):
        return "DOUBLE PRECISION"
    if pa.types.is_decimal128(dtype):
        return f"NUMERIC({dtype.precision},{dtype.scale})"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "TEXT"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    if pa.types.is_date32(dtype):
        return "DATE"
    if pa.types.is_timestamp(dtype) and dtype.unit == "us":
        return "TIMESTAMP" if dtype.tz is None else "TIMESTAMPTZ"
    return None


def quote_ident(name: str) -> str:
    """A quoted SQL identifier: mixed-case source names (``VendorID``) stay exactly as they are."""
    return '"' + name.replace('"', '""') + '"'


def split_table(table: str) -> tuple[str, str]:
    """``"namespace.name"`` -> (schema, name); the namespace becomes a SQL schema."""
    schema, dot, name = table.partition(".")
    if not dot or not schema or not name or "." in name:
        raise ParameterError(f"table must be 'namespace.name', got {table!r}")
    return schema, name


def qualified(table: str) -> str:
    schema, name = split_table(table)
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def create_table_sql(table: str, schema: pa.Schema, dialect: Dialect) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with every column nullable, in the Arrow schema's order."""
    if not schema.names:
        raise ParameterError(f"table {table}: the Arrow schema has no columns")
    if len(set(schema.names)) != len(schema.names):
        raise ParameterError(f"table {table}: the Arrow schema repeats a column name")
    columns = ", ".join(f"{quote_ident(f.name)} {sql_type(f.type, dialect)}" for f in schema)
    return f"CREATE TABLE IF NOT EXISTS {qualified(table)} ({columns})"


def check_range(
    table: str, schema: pa.Schema, column: str, start: datetime | date, stop: datetime | date
) -> None:
    """The range column exists and ``start < stop`` (both are compared as the same kind)."""
    if column not in schema.names:
        raise ParameterError(f"table {table} has no column {column!r} to replace a range of")
    if isinstance(start, datetime) != isinstance(stop, datetime):
        raise ParameterError(f"range of {table}: start and stop must both be dates or datetimes")
    if (
        isinstance(start, datetime)
        and isinstance(stop, datetime)
        and (start.tzinfo is None) != (stop.tzinfo is None)
    ):
        raise ParameterError(f"range of {table}: start and stop must both be naive or aware")
    if not start < stop:  # type: ignore[operator]
        raise ParameterError(f"range of {table}: start {start} is not before stop {stop}")


def check_slice(table: str, schema: pa.Schema, replaced: Slice) -> None:
    """The slice's column exists (and each window's bounds are ordered)."""
    if isinstance(replaced, Window):
        check_range(table, schema, replaced.column, replaced.start, replaced.stop)
    elif isinstance(replaced, Windows):
        if replaced.column not in schema.names:
            raise ParameterError(
                f"table {table} has no column {replaced.column!r} to replace windows of"
            )
        for window in replaced.windows:
            check_range(table, schema, window.column, window.start, window.stop)
    elif isinstance(replaced, RowIds) and replaced.column not in schema.names:
        raise ParameterError(f"table {table} has no column {replaced.column!r} to merge by")


def one_line(text: str) -> str:
    """A database's message on one line: the CLI shows one line."""
    return " ".join(text.split())


def missing_columns(
    existing: dict[str, str], schema: pa.Schema, dialect: Dialect
) -> list[tuple[str, str]]:
    """``(name, SQL type)`` of the columns of ``schema`` an existing table lacks."""
    if not existing:
        return []
    known = {name.lower() for name in existing}
    return [(f.name, sql_type(f.type, dialect)) for f in schema if f.name.lower() not in known]


def parquet_schema(lake: Lake, url: str) -> pa.Schema:
    """The Arrow schema of a Parquet file in the lake (reads its footer only)."""
    try:
        with lake.open(url) as handle:
            return pq.read_schema(handle)
    except FileNotFoundError as exc:
        raise CivicLakeError(f"no Parquet file at {url}") from exc
    except (OSError, pa.ArrowException) as exc:
        raise CivicLakeError(f"cannot read the Parquet footer of {url}: {exc}") from exc


def check_file_columns(url: str, file_schema: pa.Schema, schema: pa.Schema) -> None:
    """The file has exactly the table's column names (in any order), each once."""
    file_names, names = set(file_schema.names), set(schema.names)
    if len(file_names) != len(file_schema.names):
        raise CivicLakeError(f"{url}: a column name appears twice in the file")
    missing, extra = sorted(names - file_names), sorted(file_names - names)
    if missing or extra:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        raise CivicLakeError(f"{url} does not match the table's columns: {', '.join(parts)}")


def check_file_schema(
    url: str, file_schema: pa.Schema, schema: pa.Schema, dialect: Dialect
) -> None:
    """A file loads into the table only if it has exactly its columns, each of the same SQL type.

    Types are compared through the SQL mapping, so ``string`` vs ``large_string`` (what a
    Parquet round trip may change) still match; order does not matter, rows load by name.
    """
    check_file_columns(url, file_schema, schema)
    for field in schema:
        found = file_schema.field(field.name).type
        want = sql_type(field.type, dialect)
        got = sql_type(found, dialect) if _generic_type(found) else str(found)
        if got != want:
            raise CivicLakeError(f"{url}: column {field.name!r} is {got}, the table wants {want}")
