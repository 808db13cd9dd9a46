"""A table's snapshots as users read them, time travel, and rollback.

Everything here reads metadata only (the table's metadata file, no manifest or data file), so
``civiclake history`` and the checks of ``rollback`` / ``sql --as-of`` cost one small read.
Snapshots are read from the table's metadata, not the snapshot log: the log drops expired
snapshots too, but only the metadata says which snapshots a rollback may still reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from civiclake.errors import CivicLakeError, ParameterError

RUN_ID_KEY = "civiclake.run-id"
SOURCE_KEY = "civiclake.source"
RANGE_KEY = "civiclake.range"


@dataclass(frozen=True)
class SnapshotEntry:
    """One line of ``civiclake history``; field names are the JSON keys of ``--format json``."""

    snapshot_id: int
    parent_id: int | None
    committed_at: datetime
    operation: str
    run_id: str | None
    source: str | None
    range: str | None
    rows_added: int
    rows_deleted: int
    total_rows: int
    current: bool
    state: str  # "current", "rolled back" (no longer in the current history) or ""

    def as_json(self) -> dict[str, object]:
        return {
            "snapshot_id": self.snapshot_id,
            "parent_id": self.parent_id,
            "committed_at": self.committed_at.isoformat(),
            "operation": self.operation,
            "run_id": self.run_id,
            "source": self.source,
            "range": self.range,
            "rows_added": self.rows_added,
            "rows_deleted": self.rows_deleted,
            "total_rows": self.total_rows,
            "current": self.current,
            "state": self.state,
        }


JSON_KEYS = tuple(SnapshotEntry.__dataclass_fields__)


def committed_at(snapshot: Snapshot) -> datetime:
    return datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC)


def _int(props: dict[str, str], key: str) -> int:
    try:
        return int(props.get(key, 0))
    except ValueError:
        return 0


def snapshot_history(table: Table, limit: int | None = None) -> list[SnapshotEntry]:
    """Every snapshot the table still holds, newest first (ties: the later sequence number)."""

    current = table.metadata.current_snapshot_id
    head = table.current_snapshot()
    live = {s.snapshot_id for s in ancestors_of(head, table.metadata)} if head else set()
    snapshots = sorted(
        table.metadata.snapshots,
        key=lambda s: (s.timestamp_ms, s.sequence_number or 0),
        reverse=True,
    )
    if limit is not None:
        snapshots = snapshots[:limit]
    entries: list[SnapshotEntry] = []
    for snap in snapshots:
        summary = snap.summary
        props = dict(summary.additional_properties) if summary else {}
        entries.append(
            SnapshotEntry(
                snapshot_id=snap.snapshot_id,
                parent_id=snap.parent_snapshot_id,
                committed_at=committed_at(snap),
                operation=str(summary.operation.value) if summary else "",
                run_id=props.get(RUN_ID_KEY),
                source=props.get(SOURCE_KEY),
                range=props.get(RANGE_KEY),
                rows_added=_int(props, "added-records"),
                rows_deleted=_int(props, "deleted-records"),
                total_rows=_int(props, "total-records"),
                current=snap.snapshot_id == current,
                state="current"
                if snap.snapshot_id == current
                else ("" if snap.snapshot_id in live else "rolled back"),
            )
        )
    return entries


def _expired_before(table: Table) -> bool:
    """Whether older snapshots existed and were expired: the oldest one kept is not the
    table's first commit (sequence numbers start at 1 and survive expiry; parent ids do not)."""
    if not table.metadata.snapshots:
        return False
    oldest = min(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)
    return (oldest.sequence_number or 0) > 1


def snapshot_for(table: Table, name: str, snapshot_id: int) -> Snapshot:
    """The snapshot ``snapshot_id`` of ``table``, or a one-line error saying why not."""
    snap = table.snapshot_by_id(snapshot_id)
    if snap is None:
        hint = (
            "expired by `civiclake maintain`, or never existed"
            if _expired_before(table)
            else "no such snapshot"
        )
        raise ParameterError(
            f"{name} has no snapshot {snapshot_id} ({hint}): see `civiclake history {name}`"
        )
    return snap


def snapshot_at(table: Table, name: str, when: datetime) -> Snapshot:
    """The snapshot that was current at ``when`` (rollbacks included, from the snapshot log)."""
    millis = int(when.timestamp() * 1000)
    snap = table.snapshot_as_of_timestamp(millis)
    if snap is not None:
        return snap
    stamp = when.astimezone(UTC).isoformat()
    if _expired_before(table):
        oldest = min(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
        raise ParameterError(
            f"{name} at {stamp}: that snapshot was expired by `civiclake maintain` "
            f"(the oldest kept is {oldest.snapshot_id} from {committed_at(oldest).isoformat()})"
        )
    if table.metadata.snapshots:
        first = min(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
        raise ParameterError(
            f"{name} did not exist yet at {stamp} (its first snapshot is from "
            f"{committed_at(first).isoformat()})"
        )
    raise ParameterError(f"{name} did not exist yet at {stamp} (it has no snapshot)")


def parse_as_of(value: str) -> int | datetime:
    """``--as-of``: a snapshot id (digits) or an ISO timestamp (naive means UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ParameterError(
            f"--as-of: {value!r} is neither a snapshot id nor a timestamp "
            "(e.g. 2026-12-01T08:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RollbackPlan:
    table: str
    current: int
    target: Snapshot
    undone: int  # snapshots that stop being part of the current state


def plan_rollback(table: Table, name: str, snapshot_id: int) -> RollbackPlan:
    """Check a rollback: the target exists and is an ancestor of the current snapshot."""
    current = table.current_snapshot()
    if current is None:
        raise ParameterError(f"{name} has no snapshot yet: nothing to roll back")
    target = snapshot_for(table, name, snapshot_id)
    if snapshot_id == current.snapshot_id:
        raise ParameterError(f"snapshot {snapshot_id} is already the current one of {name}")
    for undone, ancestor in enumerate(ancestors_of(current, table.metadata)):
        if ancestor.snapshot_id == snapshot_id:
            return RollbackPlan(name, current.snapshot_id, target, undone)
    raise ParameterError(
        f"snapshot {snapshot_id} is not an ancestor of the current snapshot "
        f"{current.snapshot_id} of {name}: only an earlier state of the current history can "
        "be restored"
    )


def rollback(table: Table, plan: RollbackPlan) -> Snapshot:
    """Make ``plan.target`` current again (one metadata commit; Iceberg's snapshot log records
    it). Fails if the table changed since the plan was made, rather than undoing a newer load."""
    from pyiceberg.exceptions import CommitFailedException

    try:
        table.manage_snapshots().rollback_to_snapshot(plan.target.snapshot_id).commit()
    except CommitFailedException:
        raise CivicLakeError(
            f"{plan.table} changed while rolling back (a load committed): run the rollback again"
        ) from None
    except ValueError as exc:  # PyIceberg re-checks ancestry against the refreshed table
        raise ParameterError(f"{plan.table}: {exc}") from None
    snap = table.current_snapshot()
    assert snap is not None
    return snap


def partitions_touched(table: Table, run_id: str) -> list[str]:
    """Partitions (``2023-04`` for a month partition) whose data files the newest snapshots of
    run ``run_id`` added or deleted: what the load really changed, not the months its range
    spans (an incremental range up to today spans years of empty months)."""
    from pyiceberg.manifest import ManifestEntryStatus

    changed = (ManifestEntryStatus.ADDED, ManifestEntryStatus.DELETED)
    schema = table.schema()
    touched: set[str] = set()
    snap = table.current_snapshot()
    while snap is not None and snap.summary is not None:
        if snap.summary.additional_properties.get(RUN_ID_KEY) != run_id:
            break
        for manifest in snap.manifests(table.io):
            if manifest.added_snapshot_id != snap.snapshot_id:
                continue
            spec = table.specs()[manifest.partition_spec_id]
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.status not in changed:
                    continue
                parts = [
                    field.transform.to_human_string(
                        schema.find_type(field.source_id), entry.data_file.partition[i]
                    )
                    for i, field in enumerate(spec.fields)
                ]
                touched.add("/".join(parts) if parts else "(unpartitioned)")
        parent = snap.parent_snapshot_id
        snap = table.snapshot_by_id(parent) if parent is not None else None
    return sorted(touched)
