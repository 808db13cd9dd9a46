"""SQL over the catalog's Iceberg tables with DuckDB, addressed as ``namespace.table``.

DuckDB cannot download its Iceberg extension offline, so PyIceberg plans the scan (current
snapshot, live data files) and DuckDB reads those Parquet files directly: projection and
filter pushdown, parallel, and nothing materialized in Python; on an object store through the
lake's own fsspec filesystem (same credentials). Tables with merge-on-read delete
files (written by other engines) fall back to PyIceberg's own reader, which applies them.
Only tables the query mentions are planned, so a query costs one table's metadata, not all.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from civiclake import tables
from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError, first_line
from civiclake.lake import Lake, scheme_of


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mentions(sql: str, namespace: str, name: str) -> bool:
    """Whether ``sql`` names ``namespace.name``, bare or quoted (``"mta"."bnt_traffic_hourly"``)."""
    ns, nm = re.escape(namespace), re.escape(name)
    pattern = rf'(?<![\w."])(?:"{ns}"|{ns})\s*\.\s*(?:"{nm}"|{nm}(?![\w"]))'
    return re.search(pattern, sql, flags=re.IGNORECASE) is not None


# namespace.table references, each part bare or double-quoted
_REFERENCE = re.compile(
    r'(?<![\w."])("(?:[^"]|"")+"|[A-Za-z_]\w*)\s*\.\s*("(?:[^"]|"")+"|[A-Za-z_]\w*)'
)


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


def _unknown_table(sql: str, message: str) -> str | None:
    """The ``namespace.table`` of ``sql`` DuckDB did not find, from its Catalog Error."""
    match = re.search(r'Table with name "?([^"!]+?)"? does not exist', message)
    if not match:
        return None
    missing = match.group(1)
    for ref in _REFERENCE.finditer(sql):
        ns, name = _unquote(ref.group(1)), _unquote(ref.group(2))
        if missing in (name, f"{ns}.{name}"):
            return f"{ns}.{name}"
    return missing


def _register(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    namespace: str,
    name: str,
    lake: Lake,
    snapshot_id: int | None = None,
) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(namespace)}")
    target = f"{_quote(namespace)}.{_quote(name)}"
    scan = table.scan(snapshot_id=snapshot_id)
    has_data = snapshot_id is not None or table.current_snapshot() is not None
    tasks = list(scan.plan_files()) if has_data else []
    schema = scan.projection()  # the schema of that snapshot (time travel)
    if tasks and not any(t.delete_files for t in tasks):
        paths = [t.file.file_path for t in tasks]
        if all(p.startswith("file://") or p.startswith("/") for p in paths):
            paths = [p.removeprefix("file://") for p in paths]
        elif all(scheme_of(p) in lake.backend.schemes for p in paths):
            # DuckDB reads the object store through the lake's own fsspec filesystem (same
            # credentials); its httpfs extension cannot be downloaded offline anyway.
            _register_filesystem(con, lake)
        else:
            paths = []
        if paths:
            listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            columns = ", ".join(_quote(f.name) for f in schema.fields)
            con.execute(
                f"CREATE VIEW {target} AS SELECT {columns} FROM "
                f"read_parquet([{listing}], union_by_name=true)"
            )
            return
    # merge-on-read deletes, or files outside the lake: PyIceberg's reader applies everything
    arrow = scan.to_arrow() if tasks else schema.as_arrow().empty_table()
    view = f"__iceberg_{namespace}_{name}"
    con.register(view, arrow)
    con.execute(f"CREATE VIEW {target} AS SELECT * FROM {_quote(view)}")


def connect_for(
    sql: str,
    settings: Settings,
    catalog: Catalog | None = None,
    as_of: int | datetime | None = None,
    *,
    loaded_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB where every catalog table the SQL mentions is a view; with
    ``as_of`` (a snapshot id or a time), each as it was then. ``loaded_only``: not a table
    never loaded (a first load killed before its commit), which ``tables`` does not list."""
    catalog = catalog or tables.load_catalog(settings)
    lake = settings.lake()
    mentioned = [
        (".".join(ident[:-1]), ident[-1], catalog.load_table(ident))
        for namespace in catalog.list_namespaces()
        for ident in catalog.list_tables(namespace)
        if _mentions(sql, ".".join(ident[:-1]), ident[-1])
    ]
    if loaded_only:
        mentioned = [m for m in mentioned if not tables.never_loaded(m[2])]
    snapshots = _as_of_snapshots(mentioned, as_of)
    con = duckdb.connect()
    for ns, name, table in mentioned:
        _register(con, table, ns, name, lake, snapshots.get(f"{ns}.{name}"))
    return con


def _as_of_snapshots(
    mentioned: list[tuple[str, str, Table]], as_of: int | datetime | None
) -> dict[str, int]:
    """The snapshot of each mentioned table at ``as_of``. A snapshot id names one table's
    snapshot; the other tables are read as they were when it was committed."""
    from civiclake.tables import history

    if as_of is None:
        return {}
    if not mentioned:
        raise ParameterError("--as-of: the query mentions no table of the catalog")
    chosen: dict[str, int] = {}
    when: datetime
    owner = ""
    if isinstance(as_of, int):
        owners = [(f"{ns}.{n}", t) for ns, n, t in mentioned if t.snapshot_by_id(as_of)]
        if not owners:
            names = ", ".join(f"{ns}.{n}" for ns, n, _ in mentioned)
            # the one-line reason of the first table (expired, or no such snapshot)
            history.snapshot_for(mentioned[0][2], names, as_of)
        owner, owner_table = owners[0]
        snap = history.snapshot_for(owner_table, owner, as_of)
        chosen[owner] = snap.snapshot_id
        when = history.committed_at(snap)
    else:
        when = as_of
    for ns, name, table in mentioned:
        key = f"{ns}.{name}"
        if key not in chosen:
            chosen[key] = history.snapshot_at(table, key, when).snapshot_id
    return _same_load(mentioned, chosen, owner=owner if isinstance(as_of, int) else None)


def _same_load(
    mentioned: list[tuple[str, str, Table]], chosen: dict[str, int], owner: str | None
) -> dict[str, int]:
    """A table and its rejects table are two commits of one load, a moment apart: read them
    at the same load. The load is the chosen snapshot's run (``owner``'s, or the latest one
    chosen); a table with a snapshot of that run is read at it, others as chosen."""
    from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX

    key = SNAPSHOT_PROPERTY_PREFIX + "run-id"
    tables_by_key = {f"{ns}.{n}": t for ns, n, t in mentioned}

    def run_of(table: Table, snapshot_id: int) -> tuple[str | None, int]:
        snap = table.snapshot_by_id(snapshot_id)
        props = snap.summary.additional_properties if snap and snap.summary else {}
        return props.get(key), snap.timestamp_ms if snap else 0

    runs = {k: run_of(tables_by_key[k], s) for k, s in chosen.items()}
    if owner is None:
        owner = max(runs, key=lambda k: runs[k][1])
    run_id = runs[owner][0]
    if run_id is None:
        return chosen
    aligned = dict(chosen)
    for name, table in tables_by_key.items():
        if name == owner:
            continue
        same = [
            s
            for s in table.metadata.snapshots
            if s.summary and s.summary.additional_properties.get(key) == run_id
        ]
        if same:
            aligned[name] = max(same, key=lambda s: s.timestamp_ms).snapshot_id
    return aligned


def _register_filesystem(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    protocols = lake.fs.protocol if isinstance(lake.fs.protocol, tuple) else (lake.fs.protocol,)
    if not any(con.filesystem_is_registered(p) for p in protocols):
        con.register_filesystem(lake.fs)


# DuckDB errors that are failures of the world (exit 1); every other one is bad SQL (exit 2)
_WORLD_ERRORS = (
    duckdb.IOException,
    duckdb.InternalException,
    duckdb.OutOfMemoryException,
    duckdb.HTTPException,
    duckdb.FatalException,
)


def run_sql(sql: str, settings: Settings, as_of: int | datetime | None = None) -> pa.Table:
    """Run one statement (over the tables as of ``as_of``, if given); DuckDB errors become
    one-line errors: exit 2 for bad SQL, 1 when the files could not be read."""
    if not sql.strip().strip(";").strip():
        raise ParameterError("sql: the query is empty: give a statement, e.g. 'SELECT 1'")
    con = connect_for(sql, settings, as_of=as_of, loaded_only=True)
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (CREATE, SET, ...)
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        first = first_line(exc)
        if isinstance(exc, duckdb.CatalogException):
            missing = _unknown_table(sql, first)
            if missing:
                raise ParameterError(
                    f"SQL error: Catalog Error: no table {missing} in the catalog "
                    "(`civiclake tables` lists them; write tables as namespace.table)"
                ) from None
        if isinstance(exc, _WORLD_ERRORS):  # the files or the machine failed, not the SQL
            raise CivicLakeError(f"SQL error: {first}") from None
        raise ParameterError(f"SQL error: {first}") from None
    finally:
        con.close()


def to_python(value: Any) -> Any:
    """JSON-friendly form of a result value."""
    if isinstance(value, Decimal):  # DuckDB's sum() of integers is a HUGEINT/DECIMAL
        return int(value) if value == value.to_integral_value() else float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value
