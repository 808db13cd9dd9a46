"""Any Socrata dataset as a spec: which portal and id, which table, which typed columns.

A dataset is data, not code: ``DatasetSpec`` is built from the portal's own metadata
(``/api/views/ID.json``), never guessed from a page of rows, so a zip code ``00083`` stays text
and a count that exceeds 2^31 still fits. It implements the pipeline's
``DatasetSpec`` contract (``civiclake.pipeline.contract``): its reader and pure transform live in
``socrata_transform``, the flow (``flows/socrata.py``) takes a spec; nothing here does I/O.

Types (Socrata ``dataTypeName`` -> Arrow / Iceberg):

- ``text``, ``url`` (its URL), ``email``, ``phone``, ``html``: string
- ``number``, ``percent``: decimal(38, 9) — numbers arrive as strings and may exceed 2^63 or
  carry decimals; a decimal keeps every value of up to 29 integer and 9 fractional digits
  exactly (a double would round 0.1 and integers above 2^53). A value that does not fit is a
  reject with its reason, never rounded silently.
- ``money``: decimal(38, 4) (cents and mills, exactly)
- ``checkbox``: boolean
- ``calendar_date``, ``floating_timestamp``: timestamp without time zone (wall time)
- ``date``, ``fixed_timestamp``: timestamp with time zone (UTC)
- ``point``, ``location``, ``line``, ``polygon``, ``multi*``: GeoJSON text; points and
  locations also as ``<column>_longitude`` / ``<column>_latitude`` doubles for SQL filters
- anything else: text (logged once per run)

System fields arrive when ``$select=:*, *`` asks for them: ``:id`` -> ``socrata_id``,
``:created_at`` / ``:updated_at`` -> ``socrata_created_at`` / ``socrata_updated_at``;
computed regions ``:@computed_region_xxx`` -> ``computed_region_xxx``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from civiclake.errors import ParameterError
from civiclake.sources.socrata import SYSTEM_SELECT as SYSTEM_SELECT

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from civiclake.lake import Lake
    from civiclake.pipeline.contract import RunContext

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "socrata"
ID_COLUMN = "socrata_id"
CREATED_COLUMN = "socrata_created_at"
UPDATED_COLUMN = "socrata_updated_at"
SYSTEM_COLUMNS = {":id": ID_COLUMN, ":created_at": CREATED_COLUMN, ":updated_at": UPDATED_COLUMN}
NUMBER_TYPE = pa.decimal128(38, 9)
MONEY_TYPE = pa.decimal128(38, 4)
TIMESTAMP = pa.timestamp("us")
TIMESTAMP_UTC = pa.timestamp("us", tz="UTC")
GEO_TYPES = frozenset(
    {"point", "location", "line", "polygon", "multipoint", "multiline", "multipolygon"}
)
TEXT_TYPES = frozenset({"text", "url", "email", "phone", "html"})
_ARROW_TYPES: dict[str, pa.DataType] = {
    "number": NUMBER_TYPE,
    "percent": NUMBER_TYPE,
    "double": pa.float64(),
    "money": MONEY_TYPE,
    "checkbox": pa.bool_(),
    "calendar_date": TIMESTAMP,
    "floating_timestamp": TIMESTAMP,
    "date": TIMESTAMP_UTC,
    "fixed_timestamp": TIMESTAMP_UTC,
}
DATASET_ID_RE = re.compile(r"^[a-z0-9]{4}-[a-z0-9]{4}$")
_URL_ID_RE = re.compile(r"/([a-z0-9]{4}-[a-z0-9]{4})(?:\.json|\.csv|/|$|\?)")
_PARTITION_RE = re.compile(r"^(month|day|year)\(([A-Za-z_][A-Za-z0-9_]*)\)$")
_IDENT_RE = re.compile(r"[^a-z0-9_]+")


class LoadMode(StrEnum):
    """How a run decides which rows to fetch and which slice of the table they replace."""

    full = "full"  # everything; replaces the whole table (deleted source rows disappear)
    incremental = "incremental"  # rows updated since the high-water mark, merged by socrata_id
    window = "window"  # rows with a date column in [start, stop): replaces that range (B&T)


@dataclass(frozen=True)
class Column:
    """One column: the field in the API's rows, its Socrata type and its Arrow type."""

    field: str  # as in the JSON rows (``:id``, ``zip``, ``:@computed_region_abc``)
    name: str  # the table column
    socrata_type: str
    arrow_type: pa.DataType

    @property
    def iceberg_type(self) -> str:
        """The Iceberg type of the column (what PyIceberg makes of the Arrow type)."""
        from civiclake.tables import iceberg_type

        return str(iceberg_type(self.arrow_type))

    @property
    def is_geo(self) -> bool:
        return self.socrata_type in GEO_TYPES

    @property
    def has_coordinates(self) -> bool:
        return self.socrata_type in ("point", "location")


@dataclass(frozen=True)
class Partition:
    """``month(col)``, ``day(col)``, ``year(col)`` or none."""

    transform: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        return f"{self.transform}({self.column})" if self.transform else "none"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything a run needs to know about a dataset, from its metadata and the user."""

    portal: str
    dataset_id: str
    name: str
    table: str
    columns: tuple[Column, ...]
    partition: Partition = field(default_factory=Partition)
    where: str | None = None
    row_count: int | None = None
    rows_updated_at: int | None = None
    """The portal's ``rowsUpdatedAt`` (epoch seconds) when the metadata was read: a fetch's raw
    pages are reused only while it is the same (``socrata_fetch``)."""

    @property
    def rejects_table(self) -> str:
        return f"{self.table}_rejects"

    def rejects_schema(self) -> pa.Schema:
        return REJECTS_SCHEMA

    evolves = True
    """The table follows the dataset: a column the portal adds is added (never dropped)."""

    def ensure_tables(self, catalog: Catalog) -> tuple[Table, Table]:
        """The table (partitioned as asked while unpartitioned; new columns added) and its
        rejects table, created when missing."""
        from civiclake import tables

        partition = (
            (self.partition.transform, self.partition.column) if self.partition.transform else None
        )
        table = tables.ensure_table_for(
            catalog, self.table, self.arrow_schema(), partition=partition, evolve=True
        )
        return table, tables.ensure_table_for(catalog, self.rejects_table, REJECTS_SCHEMA)

    def read(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        """A raw page of the lake as batches of strings (``socrata_transform.read_page``)."""
        from civiclake.sources.socrata_transform import read_page

        return read_page(lake, url, self)

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        from civiclake.sources.socrata_transform import transform

        return transform(batch, self, ctx)

    def rejects(self, rejected: pa.Table, ctx: RunContext) -> pa.Table:
        from civiclake.sources.socrata_transform import rejects

        return rejects(rejected, ctx)

    def observe(self, rows: pa.Table) -> dict[str, set[Any]]:
        from civiclake.sources.socrata_transform import observe

        return observe(rows)

    @property
    def source(self) -> str:
        return f"socrata:{self.portal.split('://', 1)[-1]}/{self.dataset_id}"

    def arrow_schema(self) -> pa.Schema:
        """Table columns: every field (geometries as GeoJSON text plus coordinates)."""
        fields: list[pa.Field] = []
        for column in self.columns:
            fields.append(pa.field(column.name, column.arrow_type))
            if column.has_coordinates:
                fields.append(pa.field(f"{column.name}_longitude", pa.float64()))
                fields.append(pa.field(f"{column.name}_latitude", pa.float64()))
        return pa.schema(fields)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        known = ", ".join(c.name for c in self.columns)
        raise ParameterError(f"dataset {self.dataset_id} has no column {name!r} (columns: {known})")


REJECTS_SCHEMA = pa.schema(
    [
        (ID_COLUMN, pa.string()),
        ("reason", pa.string()),
        ("raw_record", pa.string()),
        ("load_run_id", pa.string()),
        ("load_source", pa.string()),
        ("rejected_at", TIMESTAMP_UTC),
    ]
)


def column_name(field_name: str) -> str:
    """The table column for an API field: system and computed-region fields lose their sigils."""
    if field_name in SYSTEM_COLUMNS:
        return SYSTEM_COLUMNS[field_name]
    if field_name.startswith(":@"):
        return _IDENT_RE.sub("_", field_name[2:].lower()).strip("_")
    return _IDENT_RE.sub("_", field_name.lower()).strip("_") or "column"


def arrow_type(socrata_type: str, field_name: str = "") -> pa.DataType:
    """The Arrow type a Socrata type becomes (see the module docstring)."""
    kind = socrata_type.lower()
    if kind in _ARROW_TYPES:
        return _ARROW_TYPES[kind]
    if kind in TEXT_TYPES or kind in GEO_TYPES:
        return pa.string()
    logger.info("column %s: unknown Socrata type %r, loaded as text", field_name, socrata_type)
    return pa.string()


def check_portal(portal: str) -> str:
    """``portal`` if it is an http(s) URL with a host: a wrong one is bad input, not a network
    failure to retry."""
    from urllib.parse import urlsplit

    parts = urlsplit(portal.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParameterError(
            f"portal {portal!r} is not a URL: give --portal (or CIVICLAKE_SOCRATA_URL) as "
            "https://host, e.g. https://data.ny.gov"
        )
    return portal.strip().rstrip("/")


def check_reference(reference: str, portal: str | None) -> None:
    """Refuse what a dataset URL would otherwise silently override or drop: a different
    ``--portal`` and the URL's own SoQL (``?$where=...``; a page's ``?tab=`` is harmless)."""
    from urllib.parse import parse_qs, urlsplit

    text = reference.strip()
    if not text.startswith(("http://", "https://")):
        return
    parts = urlsplit(text)
    if portal:
        given = urlsplit(check_portal(portal))
        if (given.hostname or "").lower() != (parts.hostname or "").lower():
            raise ParameterError(
                f"--portal {portal} differs from the dataset URL's portal "
                f"{parts.scheme}://{parts.netloc}: drop --portal (or give the bare id)"
            )
    query = [key for key in parse_qs(parts.query) if key.startswith("$")]  # SoQL, not ?tab=...
    if query:
        names = ", ".join(sorted(query))
        hint = " (pass it as --where)" if "$where" in query else ""
        raise ParameterError(
            f"the dataset URL carries SoQL ({names}) that a run does not use{hint}: "
            "give the URL without it"
        )


def parse_dataset(reference: str, default_portal: str) -> tuple[str, str]:
    """``(portal, dataset id)`` from a 4x4 id or any dataset URL of any portal."""
    text = reference.strip()
    if DATASET_ID_RE.match(text):
        return check_portal(default_portal), text
    if text.startswith(("http://", "https://")):
        scheme, rest = text.split("://", 1)
        host = rest.split("/", 1)[0]
        match = _URL_ID_RE.search("/" + rest.split("/", 1)[1] if "/" in rest else "")
        if host and match:
            return f"{scheme}://{host}", match.group(1)
        raise ParameterError(f"{reference!r}: no dataset id (like erm2-nwe9) in this URL")
    raise ParameterError(
        f"{reference!r} is not a dataset id (4x4 like qzve-kjga), a dataset URL or a "
        "dataset name from the config file"
    )


def parse_partition(text: str | None) -> Partition:
    if not text or text.strip().lower() == "none":
        return Partition()
    match = _PARTITION_RE.match(text.strip())
    if match is None:
        raise ParameterError(
            f"--partition {text!r}: use month(COLUMN), day(COLUMN), year(COLUMN) or none"
        )
    return Partition(match.group(1), match.group(2))


def default_table(dataset_id: str) -> str:
    return f"{DEFAULT_NAMESPACE}.{dataset_id.replace('-', '_')}"


def check_table_name(table: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$", table):
        raise ParameterError(f"--table {table!r}: use NAMESPACE.NAME (lower case, digits, _)")
    return table


def spec_from_view(
    view: dict[str, Any],
    *,
    portal: str,
    table: str | None = None,
    partition: str | None = None,
    where: str | None = None,
) -> DatasetSpec:
    """The spec of a tabular dataset from its metadata; a clear error for anything else."""
    dataset_id = str(view.get("id", ""))
    view_type = view.get("viewType", "tabular")
    asset = view.get("assetType", "dataset")
    if view_type != "tabular" or asset not in ("dataset", "filter", None):
        raise ParameterError(
            f"{dataset_id} is a {asset or view_type} ({view.get('displayType', view_type)}), "
            "not a tabular dataset"
        )
    columns: list[Column] = [
        Column(":id", ID_COLUMN, "text", pa.string()),
        Column(":created_at", CREATED_COLUMN, "fixed_timestamp", TIMESTAMP_UTC),
        Column(":updated_at", UPDATED_COLUMN, "fixed_timestamp", TIMESTAMP_UTC),
    ]
    seen = {c.name for c in columns}
    for meta in view.get("columns", []):
        field_name = meta.get("fieldName")
        if not field_name or field_name in SYSTEM_COLUMNS:
            continue
        name = column_name(field_name)
        if name in seen:
            continue
        seen.add(name)
        kind = str(meta.get("dataTypeName", "text"))
        columns.append(Column(field_name, name, kind, arrow_type(kind, field_name)))
    spec = DatasetSpec(
        portal=portal.rstrip("/"),
        dataset_id=dataset_id,
        name=str(view.get("name", dataset_id)),
        table=check_table_name(table) if table else default_table(dataset_id),
        columns=tuple(columns),
        partition=parse_partition(partition),
        where=where or None,
        row_count=_row_count(view),
        rows_updated_at=_rows_updated_at(view),
    )
    if spec.where:
        check_where(spec.where, spec)
    if spec.partition.column:
        chosen = spec.column(spec.partition.column)
        if not pa.types.is_timestamp(chosen.arrow_type):
            raise ParameterError(
                f"--partition {spec.partition}: {chosen.name} is {chosen.socrata_type}, "
                "not a date or timestamp"
            )
    return spec


# SoQL words that are not column names (operators, literals); a name followed by "(" is a
# function. Anything else outside a string literal must be a field of the dataset.
_SOQL_WORDS = frozenset(
    [
        "and",
        "or",
        "not",
        "is",
        "null",
        "in",
        "between",
        "like",
        "true",
        "false",
        "asc",
        "desc",
        "case",
        "when",
        "then",
        "else",
        "end",
    ]
)
_SOQL_TOKEN = re.compile(r"'(?:[^']|'')*'|`[^`]*`|[A-Za-z_:@][A-Za-z0-9_:@.]*\s*\(?|\S")


def check_where(where: str, spec: DatasetSpec) -> None:
    """Every column ``where`` names is a field of the dataset: a typo fails here, before
    anything is fetched, instead of fetching 0 rows (a full refresh would then empty the table)."""
    fields = {c.field.lower() for c in spec.columns}
    for found in _SOQL_TOKEN.findall(where):
        token = found.strip()
        if token.startswith("'") or token.endswith("("):
            continue  # a string literal, a function call
        name = (token.strip("`") if token.startswith("`") else token).split(".")[0]
        if not (name[:1].isalpha() or name[:1] in "_:@") or name.lower() in _SOQL_WORDS:
            continue
        if name.lower() not in fields:
            known = ", ".join(sorted(c.field for c in spec.columns if c.field[0] != ":")[:20])
            raise ParameterError(
                f"--where: {spec.dataset_id} has no column {name!r} (its columns: {known})"
            )


def _row_count(view: dict[str, Any]) -> int | None:
    for meta in view.get("columns", []):
        cached = meta.get("cachedContents") or {}
        if "count" in cached or "non_null" in cached:
            try:
                return int(cached.get("count", 0)) or int(cached.get("non_null", 0)) + int(
                    cached.get("null", 0)
                )
            except (TypeError, ValueError):
                return None
    return None


def _rows_updated_at(view: dict[str, Any]) -> int | None:
    try:
        return int(view["rowsUpdatedAt"])
    except (KeyError, TypeError, ValueError):
        return None
