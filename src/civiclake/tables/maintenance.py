"""Table maintenance: snapshot expiry, removal of unreferenced and orphan files, compaction.

PyIceberg 0.12 expires snapshots (``table.maintenance.expire_snapshots()``) but only edits the
metadata: it removes no file and has no orphan-file removal. What it lacks is written here
once, against the lake's fsspec filesystem, with these safety rules:

* a file is only ever removed from under the table's own location, never from under another
  table's location nested in it, and never a hidden file (``.name``: other engines' checksums);
* files that expiry made unreferenced are those reachable from the snapshots before the
  expiry commit and not from the table after it (re-read after the commit, so a load that
  committed meanwhile keeps its files): removed at once, they can never be referenced again;
* any other file no snapshot references is an orphan (a crashed run's, or a running load's
  before its commit). It is removed only when written before ``maintain`` started minus the
  safety window (default 3 days), judged by the store's own modification time; a file whose
  time cannot be read is kept. The listing is taken BEFORE the references are read, so a file
  committed in between is seen as referenced.
* compaction rewrites one partition in one commit that requires the partition's snapshot to
  still be current: a load that commits first makes it retry on the new state, never overwrite.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
)
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.table.update import AssertRefSnapshotId
from pyiceberg.transforms import IdentityTransform, MonthTransform
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake, rebatch, scheme_of
from civiclake.tables import METADATA_PROPERTIES, replace_range

logger = logging.getLogger(__name__)

DEFAULT_RETAIN_DAYS = 7
DEFAULT_RETAIN_LAST = 10
DEFAULT_ORPHANS_OLDER_THAN = "3d"
# A partition is compacted when it holds at least two data files below this size.
SMALL_FILE_BYTES = 64 * 1024 * 1024
COMPACT_CHUNK_ROWS = 500_000
COMMIT_ATTEMPTS = 4
DELETE_BATCH = 500
_DURATION = re.compile(r"^\s*(\d+)\s*([dh]?)\s*$", re.IGNORECASE)
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "timeCreated", "created")


def parse_duration(text: str, option: str = "--orphans-older-than") -> timedelta:
    """``Nd`` or ``Nh``; ``0`` means now."""
    match = _DURATION.match(text)
    if not match or (not match.group(2) and int(match.group(1)) != 0):
        raise ParameterError(f"{option}: {text!r} is not a duration (e.g. 3d, 12h, or 0)")
    amount, unit = int(match.group(1)), match.group(2).lower()
    return timedelta(hours=amount) if unit == "h" else timedelta(days=amount)


@dataclass(frozen=True)
class MaintainOptions:
    retain_days: float = DEFAULT_RETAIN_DAYS
    retain_last: int = DEFAULT_RETAIN_LAST
    orphans_older_than: timedelta = field(default_factory=lambda: parse_duration("3d"))
    compact: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.retain_days < 0:
            raise ParameterError("--retain-days must be 0 or more")
        if self.retain_last < 1:
            raise ParameterError("--retain-last must be at least 1 (the current snapshot)")


@dataclass(frozen=True)
class LakeFile:
    url: str  # as the filesystem lists it (no protocol)
    size: int
    kind: str  # data, manifest, manifest-list, metadata, orphan


@dataclass
class TableReport:
    table: str
    dry_run: bool
    snapshots_before: int = 0
    snapshots_expired: list[int] = field(default_factory=list)
    snapshots_kept: int = 0
    files_removed: list[LakeFile] = field(default_factory=list)
    orphans_removed: list[LakeFile] = field(default_factory=list)
    orphans_kept: int = 0  # younger than the safety window
    files_compacted: int = 0
    files_written: int = 0
    partitions_compacted: list[str] = field(default_factory=list)
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    seconds: float = 0.0

    @property
    def removed(self) -> list[LakeFile]:
        return self.files_removed + self.orphans_removed

    @property
    def bytes_removed(self) -> int:
        return sum(f.size for f in self.removed)

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "dry_run": self.dry_run,
            "snapshots_before": self.snapshots_before,
            "snapshots_expired": len(self.snapshots_expired),
            "snapshots_kept": self.snapshots_kept,
            "files_removed": len(self.removed),
            "bytes_removed": self.bytes_removed,
            "orphans_removed": len(self.orphans_removed),
            "orphans_kept_young": self.orphans_kept,
            "files_compacted": self.files_compacted,
            "files_written": self.files_written,
            "partitions_compacted": self.partitions_compacted,
            "files_before": self.files_before,
            "bytes_before": self.bytes_before,
            "files_after": self.files_after,
            "bytes_after": self.bytes_after,
            "seconds": round(self.seconds, 2),
        }


# ---------------------------------------------------------------- the lake's files


def _mtime(info: dict[str, Any]) -> datetime | None:
    """The store's modification time of a listed file, in UTC; None when it has none."""
    for key in _MTIME_KEYS:
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class _Listed:
    size: int
    mtime: datetime | None


def _list(lake: Lake, root: str) -> dict[str, _Listed]:
    """Every file under ``root`` (a filesystem path), with size and modification time."""
    if not lake.fs.exists(root):
        return {}
    found = lake.fs.find(root, detail=True)
    return {
        path.rstrip("/"): _Listed(int(info.get("size") or 0), _mtime(info))
        for path, info in found.items()
        if info.get("type", "file") != "directory"
    }


class _Locations:
    """Maps Iceberg's URLs to the lake filesystem's paths and keeps removals inside a table."""

    def __init__(self, lake: Lake, table_location: str, others: Iterable[str]) -> None:
        if scheme_of(table_location) not in lake.backend.schemes:
            raise CivicLakeError(
                f"the table's location {table_location} is not in the lake {lake.url}: "
                "maintain removes files only inside the lake"
            )
        self.lake = lake
        self.root = self.key(table_location).rstrip("/") + "/"
        if self.root.count("/") < 2:  # a bucket or filesystem root: never list that as one table
            raise CivicLakeError(f"refusing to maintain a table located at {table_location}")
        self.excluded = [
            k
            for k in (self.key(o).rstrip("/") + "/" for o in others)
            if k != self.root and k.startswith(self.root)
        ]

    def key(self, url: str) -> str:
        return str(self.lake.fs._strip_protocol(url)).rstrip("/")

    def removable(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return (
            path.startswith(self.root)
            and not name.startswith(".")
            and not any(path.startswith(e) for e in self.excluded)
        )


def _remove(lake: Lake, paths: list[str]) -> None:
    for start in range(0, len(paths), DELETE_BATCH):
        batch = paths[start : start + DELETE_BATCH]
        try:
            lake.fs.rm(batch)
        except FileNotFoundError:  # one already gone: remove the rest one by one
            for path in batch:
                if lake.fs.exists(path):
                    lake.fs.rm(path)


# ---------------------------------------------------------------- references


class _References:
    """Files snapshots reference (manifest lists, manifests, data and delete files), read
    once per manifest: consecutive snapshots share most of their manifests."""

    def __init__(self, table: Table, locations: _Locations) -> None:
        self.table = table
        self.locations = locations
        self._manifest_files: dict[str, set[str]] = {}

    def of(self, snapshots: Iterable[Snapshot]) -> dict[str, str]:
        out: dict[str, str] = {}
        key = self.locations.key
        io = self.table.io
        for snap in snapshots:
            out[key(snap.manifest_list)] = "manifest-list"
            for manifest in snap.manifests(io):
                path = key(manifest.manifest_path)
                out[path] = "manifest"
                if path not in self._manifest_files:
                    self._manifest_files[path] = {
                        key(entry.data_file.file_path)
                        for entry in manifest.fetch_manifest_entry(io, discard_deleted=True)
                    }
                for data in self._manifest_files[path]:
                    out[data] = "data"
        return out

    def metadata(self, table: Table) -> dict[str, str]:
        """The current metadata file, the ones in its log, and statistics files."""
        key = self.locations.key
        meta = table.metadata
        out = {key(entry.metadata_file): "metadata" for entry in meta.metadata_log}
        out[key(table.metadata_location)] = "metadata"
        for stats in [*meta.statistics, *meta.partition_statistics]:
            out[key(stats.statistics_path)] = "statistics"
        return out

    def all(self, table: Table) -> dict[str, str]:
        return {**self.of(table.metadata.snapshots), **self.metadata(table)}


# ---------------------------------------------------------------- steps


def snapshots_to_expire(table: Table, options: MaintainOptions, now: datetime) -> list[int]:
    """Snapshots older than the window, except the last ``retain_last`` of the current
    history and every branch or tag head."""
    current = table.current_snapshot()
    keep = {ref.snapshot_id for ref in table.metadata.refs.values()}
    for index, snap in enumerate(ancestors_of(current, table.metadata)):
        if index >= options.retain_last:
            break
        keep.add(snap.snapshot_id)
    cutoff_ms = int((now - timedelta(days=options.retain_days)).timestamp() * 1000)
    return [
        s.snapshot_id
        for s in table.metadata.snapshots
        if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep
    ]


def _commit_with_retries(table: Table, attempt: Callable[[], None], what: str) -> None:
    for number in range(1, COMMIT_ATTEMPTS + 1):
        try:
            attempt()
            return
        except (CommitFailedException, ValueError):
            # ValueError: PyIceberg found a snapshot to expire already gone (another maintain
            # expired it meanwhile); the ids are recomputed from the refreshed table
            if number == COMMIT_ATTEMPTS:
                raise CivicLakeError(
                    f"{what}: the table kept changing under maintain ({COMMIT_ATTEMPTS} commit "
                    "conflicts): run maintain again"
                ) from None
            time.sleep(0.2 * number)
            table.refresh()


def _expire(
    table: Table, refs: _References, options: MaintainOptions, now: datetime, report: TableReport
) -> dict[str, str]:
    """Expire snapshots; returns the paths only expired snapshots referenced."""
    before = refs.all(table)
    expired: list[int] = []

    def attempt() -> None:
        table.refresh()
        ids = snapshots_to_expire(table, options, now)
        expired[:] = ids
        if ids and not options.dry_run:
            expire = table.maintenance.expire_snapshots().by_ids(ids)
            # PyIceberg's expiry asserts nothing about the table, and the catalog applies it to
            # whatever is current: a load or rollback committed meanwhile would be judged on the
            # stale state (a rolled-back-to snapshot could even be expired). Require the branch
            # to be where the ids were computed; a conflict retries on the refreshed table.
            current = table.metadata.current_snapshot_id
            expire._requirements = (AssertRefSnapshotId(ref=MAIN_BRANCH, snapshot_id=current),)
            expire.commit()

    _commit_with_retries(table, attempt, f"{report.table}: expiring snapshots")
    report.snapshots_expired = expired
    if options.dry_run:
        gone = set(expired)
        kept = [s for s in table.metadata.snapshots if s.snapshot_id not in gone]
        after = {**refs.of(kept), **refs.metadata(table)}
        report.snapshots_kept = len(kept)
    else:
        table.refresh()  # a load that committed meanwhile: its files are referenced now
        after = refs.all(table)
        report.snapshots_kept = len(table.metadata.snapshots)
    return {path: kind for path, kind in before.items() if path not in after}


def _partition_filter(table: Table, partition: Any) -> tuple[BooleanExpression, str] | None:
    """An exact filter for one partition of the current spec (identity and month
    transforms), with a label; None for transforms it cannot express."""
    spec = table.spec()
    if spec.is_unpartitioned():
        return AlwaysTrue(), "(unpartitioned)"
    schema = table.schema()
    parts: list[BooleanExpression] = []
    labels: list[str] = []
    for position, pfield in enumerate(spec.fields):
        source = schema.find_field(pfield.source_id)
        value = partition[position]
        if value is None:
            parts.append(IsNull(source.name))
            labels.append(f"{pfield.name}=null")
        elif isinstance(pfield.transform, IdentityTransform):
            parts.append(EqualTo(source.name, value))
            labels.append(f"{pfield.name}={value}")
        elif isinstance(pfield.transform, MonthTransform) and isinstance(
            source.field_type, DateType | TimestampType | TimestamptzType
        ):
            year, month = divmod(int(value), 12)
            first = date(1970 + year, month + 1, 1)
            following = (first + timedelta(days=32)).replace(day=1)
            lo, hi = first.isoformat(), following.isoformat()
            if not isinstance(source.field_type, DateType):
                suffix = (
                    "T00:00:00+00:00"
                    if isinstance(source.field_type, TimestamptzType)
                    else ("T00:00:00")
                )
                lo, hi = lo + suffix, hi + suffix
            parts.append(And(GreaterThanOrEqual(source.name, lo), LessThan(source.name, hi)))
            labels.append(f"{pfield.name}={first:%Y-%m}")
        else:
            return None
    expression = parts[0] if len(parts) == 1 else And(*parts)
    return expression, ",".join(labels)


def _compaction_candidates(table: Table) -> list[tuple[Any, list[Any]]]:
    """Partitions of the current spec holding two or more small data files."""
    if table.current_snapshot() is None:
        return []
    spec_id = table.spec().spec_id
    groups: dict[Any, list[Any]] = {}
    for task in table.scan().plan_files():
        if task.delete_files:  # merge-on-read deletes (another engine): leave it to that engine
            return []
        data = task.file
        if data.spec_id != spec_id:
            continue
        groups.setdefault(tuple(data.partition), []).append(data)
    return [
        (partition, files)
        for partition, files in sorted(groups.items(), key=lambda kv: str(kv[0]))
        if sum(1 for f in files if f.file_size_in_bytes < SMALL_FILE_BYTES) >= 2
    ]


def _compact(table: Table, options: MaintainOptions, report: TableReport, log: Any) -> None:
    run_id = f"maintain-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    for partition, files in _compaction_candidates(table):
        found = _partition_filter(table, partition)
        if found is None:
            continue
        expression, label = found
        report.partitions_compacted.append(label)
        report.files_compacted += len(files)
        if options.dry_run:
            continue
        before = {f.file_path for f in files}

        def chunks(expression: BooleanExpression = expression) -> Iterator[pa.Table]:
            # the table as the (re)tried commit sees it: a retry reads the refreshed state
            scan = table.scan(row_filter=expression)
            return rebatch(scan.to_arrow_batch_reader(), COMPACT_CHUNK_ROWS)

        replace_range(
            table,
            expression,
            chunks,
            {"run-id": run_id, "source": "civiclake maintain --compact", "range": label},
        )
        written = [
            t.file
            for t in table.scan(row_filter=expression).plan_files()
            if t.file.file_path not in before
        ]
        report.files_written += len(written)
        log.info("%s: compacted %s: %d files -> %d", report.table, label, len(files), len(written))


def _ensure_properties(table: Table) -> None:
    missing = {k: v for k, v in METADATA_PROPERTIES.items() if table.properties.get(k) is None}
    if missing:
        with table.transaction() as tx:
            tx.set_properties(missing)


def maintain_table(
    catalog: Catalog,
    name: str,
    lake: Lake,
    options: MaintainOptions,
    *,
    other_locations: Iterable[str] = (),
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> TableReport:
    """Compact (optionally), expire, remove unreferenced files, then orphans, for one table."""
    began = time.monotonic()
    started = datetime.now(UTC)
    report = TableReport(table=name, dry_run=options.dry_run)
    table = catalog.load_table(name)
    locations = _Locations(lake, table.metadata.location, other_locations)
    refs = _References(table, locations)
    listing = _list(lake, locations.root)
    report.files_before, report.bytes_before = len(listing), sum(f.size for f in listing.values())
    report.snapshots_before = len(table.metadata.snapshots)

    if options.compact:
        _compact(table, options, report, log)
    if not options.dry_run:
        _ensure_properties(table)

    unreferenced = _expire(table, refs, options, started, report)
    for path, kind in sorted(unreferenced.items()):
        if locations.removable(path) and path in listing:
            report.files_removed.append(LakeFile(path, listing[path].size, kind))

    # orphans: list first, then read what the (refreshed) table references
    listing = _list(lake, locations.root) if not options.dry_run else listing
    removed_now = {f.url for f in report.files_removed}
    if not options.dry_run:
        table.refresh()
    referenced = refs.all(table)
    cutoff = started - options.orphans_older_than
    for path, info in sorted(listing.items()):
        if path in referenced or path in removed_now or not locations.removable(path):
            continue
        if path in unreferenced:
            continue
        if info.mtime is not None and info.mtime < cutoff:
            report.orphans_removed.append(LakeFile(path, info.size, "orphan"))
        else:
            report.orphans_kept += 1

    if not options.dry_run:
        _remove(lake, [f.url for f in report.removed])
        after = _list(lake, locations.root)
        report.files_after, report.bytes_after = len(after), sum(f.size for f in after.values())
    else:
        report.files_after = report.files_before - len(report.removed)
        report.bytes_after = report.bytes_before - report.bytes_removed
    report.seconds = time.monotonic() - began
    return report


def resolve_tables(catalog: Catalog, names: list[str]) -> list[str]:
    """The tables to maintain: those named (each must exist), or every table of the catalog."""
    known = [
        ".".join(ident)
        for namespace in sorted(catalog.list_namespaces())
        for ident in sorted(catalog.list_tables(namespace))
    ]
    if not names:
        return known
    missing = [n for n in names if n not in known]
    if missing:
        listed = ", ".join(known) if known else "none yet"
        raise ParameterError(f"no table {missing[0]} in the catalog (tables: {listed})")
    return list(dict.fromkeys(names))


def table_locations(catalog: Catalog, names: Iterable[str]) -> list[str]:
    return [catalog.load_table(n).metadata.location for n in names]
