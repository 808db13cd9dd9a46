"""The Socrata transform: one page of JSON rows -> (typed valid rows, rejects). Pure: no I/O.

Separate from fetching and writing so another engine can run the same rules. Every column is
cast as a whole Arrow array (the fast path); only when a cast fails are that column's values
cast one by one to find the rows that do not fit, which become rejects with the column, the
value and the type in their reason. A missing key is NULL (Socrata omits null fields).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from civiclake.sources.socrata_dataset import (
    ID_COLUMN,
    REJECTS_SCHEMA,
    Column,
    DatasetSpec,
)

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def transform(
    records: Sequence[dict[str, Any]],
    spec: DatasetSpec,
    *,
    run_id: str,
    source: str,
    now: datetime,
) -> tuple[pa.Table, pa.Table]:
    """``records`` (as the API sent them) -> (rows in ``spec.arrow_schema()``, rejects)."""
    reasons: list[str | None] = [None] * len(records)
    arrays: list[pa.Array] = []
    for column in spec.columns:
        raw = [record.get(column.field) for record in records]
        if column.is_geo:
            arrays.append(pa.array([_geojson(v) for v in raw], pa.string()))
            if column.has_coordinates:
                longitude, latitude = _coordinates(raw)
                arrays += [longitude, latitude]
            continue
        arrays.append(_typed(column, raw, reasons))
    schema = spec.arrow_schema()
    table = pa.Table.from_arrays(arrays, schema=schema)
    bad = [i for i, reason in enumerate(reasons) if reason is not None]
    if not bad:
        return table, REJECTS_SCHEMA.empty_table()
    keep = pa.array([reason is None for reason in reasons], pa.bool_())
    rejects = pa.table(
        {
            ID_COLUMN: [_text(records[i].get(":id")) for i in bad],
            "reason": [reasons[i] for i in bad],
            "raw_record": [orjson.dumps(records[i]).decode() for i in bad],
            "load_run_id": [run_id] * len(bad),
            "load_source": [source] * len(bad),
            "rejected_at": pa.repeat(
                pa.scalar(now, REJECTS_SCHEMA.field("rejected_at").type), len(bad)
            ),
        },
        schema=REJECTS_SCHEMA,
    )
    return table.filter(keep), rejects


def _typed(column: Column, raw: list[Any], reasons: list[str | None]) -> pa.Array:
    target = column.arrow_type
    if pa.types.is_string(target):
        return pa.array(
            [_text(v) if column.socrata_type != "url" else _url(v) for v in raw], target
        )
    strings = pa.array([_scalar_text(v) for v in raw], pa.string())
    try:
        return pc.cast(strings, target)
    except _CAST_ERRORS:
        pass
    values: list[Any] = []
    for i, value in enumerate(strings.to_pylist()):
        if value is None:
            values.append(None)
            continue
        try:
            values.append(pc.cast(pa.array([value], pa.string()), target)[0].as_py())
        except _CAST_ERRORS:
            values.append(None)
            if reasons[i] is None:
                reasons[i] = (
                    f"{column.name}: {value[:80]!r} is not a valid {column.socrata_type} ({target})"
                )
    return pa.array(values, target)


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a nested value where a scalar was declared: fails the cast


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _url(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("url")
    return _text(value)


def _geojson(value: Any) -> str | None:
    """GeoJSON text of a geometry; old ``location`` values become a GeoJSON Point."""
    if value is None:
        return None
    if isinstance(value, dict) and "type" not in value and "latitude" in value:
        point = _location_point(value)
        return orjson.dumps({"type": "Point", "coordinates": point}).decode() if point else None
    return _text(value)


def _location_point(value: dict[str, Any]) -> list[float] | None:
    try:
        return [float(value["longitude"]), float(value["latitude"])]
    except (KeyError, TypeError, ValueError):
        return None


def _coordinates(raw: list[Any]) -> tuple[pa.Array, pa.Array]:
    longitudes: list[float | None] = []
    latitudes: list[float | None] = []
    for value in raw:
        point: list[float] | None = None
        if isinstance(value, dict):
            if value.get("type") == "Point":
                coordinates = value.get("coordinates") or []
                if len(coordinates) >= 2:
                    point = [float(coordinates[0]), float(coordinates[1])]
            elif "latitude" in value:
                point = _location_point(value)
        longitudes.append(point[0] if point else None)
        latitudes.append(point[1] if point else None)
    return pa.array(longitudes, pa.float64()), pa.array(latitudes, pa.float64())
