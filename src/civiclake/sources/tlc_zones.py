"""The TLC taxi zone lookup (``taxi_zone_lookup.csv``, 265 zones) as the table ``tlc.taxi_zones``,
so pickup and dropoff location ids can be shown by name.

Where it comes from, first match wins (a taxi run never fails over it, the zones are a lookup):

1. the table already has rows: nothing to do (the lookup changes once in years; no request);
2. ``--from-file``: a ``taxi_zone_lookup.csv`` in the same folder as the month's file
   (offline runs bring their own copy; a from-file run never goes to the network for it);
3. ``CIVICLAKE_TLC_ZONES_URL``, else ``<mirror root>/misc/taxi_zone_lookup.csv`` next to the trip
   files of ``CIVICLAKE_TLC_URL`` (the course mirror's ``misc`` release and the official TLC
   CloudFront both keep it there);
4. otherwise a warning: the report then labels zones by id.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
from pyiceberg.catalog import Catalog

from civiclake import tables
from civiclake.config import Settings
from civiclake.errors import SourceError

TABLE = "tlc.taxi_zones"
FILE_NAME = "taxi_zone_lookup.csv"
SCHEMA = pa.schema(
    [
        ("locationid", pa.int32()),
        ("borough", pa.string()),
        ("zone", pa.string()),
        ("service_zone", pa.string()),
    ]
)


def zones_url(settings: Settings) -> str:
    """``CIVICLAKE_TLC_ZONES_URL``, else ``misc/taxi_zone_lookup.csv`` at the mirror's root: the
    base itself, or for a template the folder above its placeholders (above the trip files'
    folder when only the file name has placeholders, as on the official CloudFront)."""
    if settings.tlc_zones_url:
        return settings.tlc_zones_url
    base = settings.tlc_url
    if "{" in base:
        cut = base.rindex("/", 0, base.index("{"))
        base, rest = base[:cut], base[cut + 1 :]
        if "/" not in rest:  # the placeholders are in the file name: one folder up
            base = base.rsplit("/", 1)[0]
    return f"{base.rstrip('/')}/misc/{FILE_NAME}"


def parse(data: bytes) -> pa.Table:
    """The CSV (header ``LocationID,Borough,Zone,service_zone`` in any case) as ``SCHEMA``."""
    try:
        table = pacsv.read_csv(io.BytesIO(data))
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{FILE_NAME}: not a CSV file ({exc})") from None
    table = table.rename_columns([c.strip().lower() for c in table.column_names])
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise SourceError(f"{FILE_NAME}: missing column(s) {', '.join(missing)}")
    return table.select(SCHEMA.names).cast(SCHEMA)


def is_loaded(catalog: Catalog) -> bool:
    if not catalog.table_exists(TABLE):
        return False
    snapshot = catalog.load_table(TABLE).current_snapshot()
    return bool(snapshot and snapshot.summary and int(snapshot.summary["total-records"]))


def load(catalog: Catalog, zones: pa.Table, source: str, run_id: str) -> int | None:
    """Replace the whole table in one commit; returns the snapshot id."""
    table = tables.ensure_table_for(catalog, TABLE, SCHEMA)
    props = {"run-id": run_id, "source": source, "range": "all"}
    prefixed = {tables.SNAPSHOT_PROPERTY_PREFIX + k: v for k, v in props.items()}
    with warnings.catch_warnings():
        # the first load overwrites an empty table; PyIceberg warns that nothing matched
        warnings.filterwarnings("ignore", "Delete operation did not match any records")
        table.overwrite(zones, snapshot_properties=prefixed)
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def ensure(
    settings: Settings, *, run_id: str, from_file: str | None, log: Any = None
) -> dict[str, Any]:
    """Load the lookup when missing (see the module docstring); never raises."""
    log = log or logging.getLogger(__name__)
    catalog = tables.load_catalog(settings)
    if is_loaded(catalog):
        return {"status": "present"}
    try:
        if from_file:
            local = Path(from_file).expanduser().parent / FILE_NAME
            if not local.is_file():
                log.warning("%s not loaded: no %s next to %s", TABLE, FILE_NAME, from_file)
                return {"status": "missing"}
            data, source = local.read_bytes(), f"file:{FILE_NAME}"
        else:
            url = zones_url(settings)
            response = httpx.get(url, timeout=settings.http_timeout, follow_redirects=True)
            if response.status_code != 200:
                log.warning("%s not loaded: HTTP %s from %s", TABLE, response.status_code, url)
                return {"status": "missing"}
            data, source = response.content, f"tlc:{url.rsplit('/', 1)[-1]}"
        zones = parse(data)
        snapshot_id = load(catalog, zones, source, run_id)
    except (httpx.HTTPError, OSError, SourceError) as exc:
        log.warning("%s not loaded: %s", TABLE, " ".join(str(exc).split()))
        return {"status": "missing"}
    log.info("loaded %d taxi zones into %s", zones.num_rows, TABLE)
    return {"status": "loaded", "rows": zones.num_rows, "snapshot_id": snapshot_id}
