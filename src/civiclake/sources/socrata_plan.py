"""What a ``socrata run`` will do, decided before anything is fetched (no Prefect imported).

The spec comes from the portal's metadata; the mode from the table: no table or ``--full``
means a full load that replaces the whole table; otherwise an incremental load of the rows
updated since the high-water mark (minus ``OVERLAP``), merged by ``socrata_id``. The
high-water mark is a snapshot property of the last load, so finding it reads no data file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from civiclake.config import Settings
from civiclake.errors import ParameterError, SourceError
from civiclake.slices import Window
from civiclake.sources import socrata_dataset as datasets
from civiclake.sources.socrata import SocrataClient, date_range_where, floating_timestamp
from civiclake.sources.socrata_dataset import DatasetSpec, LoadMode

OVERLAP = timedelta(minutes=10)  # re-fetched before the high-water mark: clock skew, late commits


@dataclass(frozen=True)
class Plan:
    spec: DatasetSpec
    mode: LoadMode
    high_water_mark: str | None
    where: str | None  # the $where the fetch sends
    window: Window | None = None  # the range a window load replaces
    table_snapshot: int | None = None  # the table's snapshot the plan was made from

    @property
    def mode_text(self) -> str:
        if self.mode is LoadMode.full:
            return "everything, replacing the table (full)"
        if self.mode is LoadMode.window and self.window is not None:
            return f"rows with {self.window}, replacing that range"
        return f"rows updated since {self.high_water_mark}, merged by {datasets.ID_COLUMN}"


def resolve_spec(
    settings: Settings,
    dataset: str,
    *,
    portal: str | None = None,
    table: str | None = None,
    partition: str | None = None,
    where: str | None = None,
) -> DatasetSpec:
    """The dataset's spec from its portal's metadata (a config-file name, an id or a URL)."""
    named = settings.datasets.get(dataset)
    if named is not None:
        portal = portal or named.portal
        table = table or named.table
        partition = partition or named.partition
        where = where or named.where
        dataset = named.id
    datasets.check_reference(dataset, portal)
    portal_url, dataset_id = datasets.parse_dataset(dataset, portal or settings.socrata_url)
    if partition:
        datasets.parse_partition(partition)  # a malformed value fails before any request
    if table:
        datasets.check_table_name(table)
    with SocrataClient.from_settings(settings, base_url=portal_url) as client:
        view = client.view(dataset_id)
        tabular = view.get("viewType", "tabular") == "tabular"
        if not view.get("columns") and tabular and view.get("assetType", "dataset") == "dataset":
            view = {**view, "columns": _columns_from_headers(client, dataset_id)}
    return datasets.spec_from_view(
        view, portal=portal_url, table=table, partition=partition, where=where
    )


def _columns_from_headers(client: SocrataClient, dataset_id: str) -> list[dict[str, str]]:
    """Metadata without a column list: the SODA2 field/type headers of a data page, or a
    refusal (typed from nothing, every data column would load as NULL)."""
    columns = client.soda2_columns(dataset_id)
    if not columns:
        raise SourceError(
            f"{dataset_id}: its metadata lists no columns and its data pages carry no "
            "X-SODA2-Fields/X-SODA2-Types headers: cannot type its columns, nothing loaded"
        )
    return columns


def table_state(settings: Settings, spec: DatasetSpec) -> tuple[int | None, str | None]:
    """The table's current snapshot id and its high-water mark (None, None: no table yet)."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(spec.table):
        return None, None
    table = catalog.load_table(spec.table)
    snapshot = table.current_snapshot()
    hwm = tables.snapshot_property(table, tables.HWM_PROPERTY)
    return (snapshot.snapshot_id if snapshot else None), hwm


def incremental_where(hwm: str, where: str | None) -> str:
    since = datetime.fromisoformat(hwm).astimezone(UTC).replace(tzinfo=None) - OVERLAP
    clause = f":updated_at >= {floating_timestamp(since)}"
    return f"({where}) AND {clause}" if where else clause


def date_window(
    spec: DatasetSpec, date_field: str, start: date, stop: date | None, *, today: date
) -> Window:
    """``[start, stop)`` on a date or timestamp column of the dataset (stop: through today)."""
    column = spec.column(date_field)
    if not pa.types.is_timestamp(column.arrow_type):
        raise ParameterError(
            f"--date-field {date_field}: {column.name} is {column.socrata_type}, "
            "not a date or timestamp"
        )
    stop = stop or today + timedelta(days=1)
    if stop <= start:
        raise ParameterError(
            f"--stop-date {stop} must be after --start-date {start} (the range is [start, stop))"
        )
    zone = UTC if column.arrow_type.tz is not None else None
    bounds = (datetime.combine(d, datetime.min.time(), tzinfo=zone) for d in (start, stop))
    return Window(column.name, *bounds)


def window_where(spec: DatasetSpec, window: Window) -> str:
    field = spec.column(window.column).field
    clause = date_range_where(field, window.start, window.stop)
    return f"({spec.where}) AND {clause}" if spec.where else clause


def plan(
    settings: Settings, spec: DatasetSpec, *, full: bool = False, window: Window | None = None
) -> Plan:
    snapshot, hwm = table_state(settings, spec)
    if full:
        hwm = None
    if window is not None:
        # a window load carries the high-water mark forward but never starts one: rows outside
        # the window were not fetched, so a later incremental run needs a full load first
        return Plan(spec, LoadMode.window, hwm, window_where(spec, window), window, snapshot)
    if hwm is None:
        return Plan(spec, LoadMode.full, None, spec.where, table_snapshot=snapshot)
    return Plan(
        spec, LoadMode.incremental, hwm, incremental_where(hwm, spec.where), table_snapshot=snapshot
    )


def range_window(
    spec: DatasetSpec,
    date_field: str | None,
    start: date | None,
    stop: date | None,
    *,
    full: bool = False,
) -> Window | None:
    """The window a range load replaces; None without range options; a one-line error for
    incomplete or contradictory ones."""
    if not (date_field or start or stop):
        return None
    if not (date_field and start):
        raise ParameterError("a range load needs --date-field COLUMN and --start-date")
    if full:
        raise ParameterError("--full replaces the whole table: drop the range options")
    return date_window(spec, date_field, start, stop, today=date.today())


def describe(
    settings: Settings,
    dataset: str,
    *,
    portal: str | None = None,
    table: str | None = None,
    partition: str | None = None,
) -> Plan:
    """What ``socrata run`` would do, with the dataset's exact row count."""
    spec = resolve_spec(settings, dataset, portal=portal, table=table, partition=partition)
    with SocrataClient.from_settings(settings, base_url=spec.portal) as client:
        rows = client.count(spec.dataset_id, where=spec.where)  # exact, unlike cached metadata
    return plan(settings, replace(spec, row_count=rows))


def check_existing_table(settings: Settings, spec: DatasetSpec, *, full: bool = False) -> None:
    """Refuse what a load into an existing table would otherwise silently do wrong: merge rows
    of another portal (or dataset) into it (``full`` replaces them all: allowed), or ignore a
    ``--partition`` other than its own (repartitioning a loaded table is not supported)."""
    from civiclake import tables
    from civiclake.tables.history import SOURCE_KEY

    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(spec.table):
        return
    table = catalog.load_table(spec.table)
    if tables.never_loaded(table):
        return  # a first load that died before its commit: this load starts the table anew
    fields = table.spec().fields
    if spec.partition.transform and fields:
        schema = table.schema()
        current = ", ".join(
            f"{f.transform}({schema.find_column_name(f.source_id)})" for f in fields
        )
        if current != str(spec.partition):
            raise ParameterError(
                f"--partition {spec.partition}: {spec.table} is partitioned by {current}; "
                "repartitioning a loaded table is not supported: drop --partition, or give "
                "--table for a new table"
            )
    loaded_from = next(
        (
            s.summary.additional_properties.get(SOURCE_KEY)
            for s in reversed(table.metadata.snapshots)
            if s.summary
            and (s.summary.additional_properties.get(SOURCE_KEY) or "").startswith("socrata:")
        ),
        None,
    )
    if loaded_from and loaded_from != spec.source and not full:
        raise ParameterError(
            f"{spec.table} holds rows of {loaded_from}, this run reads {spec.source}: the rows "
            "of two sources would be mixed; give the same --portal, --table for a new table, or "
            "--full to replace them all"
        )
