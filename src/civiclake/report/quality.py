"""The data-quality section every page ends with: rejects by reason per load, the rows each
snapshot added and removed (from the table's own history, with civiclake's run id, source and
range), and the last load. History comes from Iceberg metadata, rejects from one SQL aggregate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from civiclake.report import charts
from civiclake.report._source import Source, quote
from civiclake.report.page import Section, TableBlock
from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX

HISTORY_SNAPSHOTS = 60  # the most recent ones: a daily schedule makes thousands in a decade
REASON_COLUMNS = ("reason", "reject_reason")
RUN_COLUMN = "load_run_id"
LABEL_COLUMNS = ("load_range", "source_month", "load_source")
REJECTS_LOADS = 40


def row_changes(added_records: int, deleted_records: int) -> tuple[int, int, int]:
    """(rows added, rows removed, rows rewritten unchanged) of one snapshot, from its summary.

    A snapshot's ``added-records`` / ``deleted-records`` count the rows of the data FILES it
    added and removed. Replacing 800 rows of a 20,000-row file (an incremental load, a range
    replaced) rewrites the file: PyIceberg commits a delete snapshot that removes the file
    (20,000) and adds a copy without those rows (19,200), then an append snapshot (800). The
    19,200 rows copied unchanged are no change to the table, so they are taken out of both
    figures: the delete snapshot shows -800, the append +800, and each snapshot's added minus
    removed is still its change of ``total-records``. A single commit that both replaces and
    adds rows (another engine's copy-on-write MERGE) shows its net change only: its summary
    cannot tell rows copied unchanged from rows updated.
    """
    rewritten = min(added_records, deleted_records)
    return added_records - rewritten, deleted_records - rewritten, rewritten


def snapshot_history(table: Table) -> list[dict[str, Any]]:
    """Every snapshot, oldest first: when, operation, rows added/removed (see
    ``row_changes``)/total, run, source, and ``status``: "current", "rolled back" (not an
    ancestor of the current snapshot: a rollback undid it) or "" (an earlier state)."""
    current = table.current_snapshot()
    live = {s.snapshot_id for s in ancestors_of(current, table.metadata)} if current else set()
    records = []
    for snap in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms):
        summary = snap.summary
        props = summary.additional_properties if summary else {}

        def prop(name: str, props: dict[str, str] = props) -> str:
            return props.get(SNAPSHOT_PROPERTY_PREFIX + name, "")

        added, removed, rewritten = row_changes(
            int(props.get("added-records", 0)), int(props.get("deleted-records", 0))
        )
        status = ""
        if current is not None and snap.snapshot_id == current.snapshot_id:
            status = "current"
        elif snap.snapshot_id not in live:
            status = "rolled back"
        records.append(
            {
                # ids as text: never thousands separators, never float-rounded by a chart
                "snapshot_id": str(snap.snapshot_id),
                "committed_at": datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "operation": summary.operation.value if summary else "",
                "rows_added": added,
                "rows_removed": removed,
                "rows_rewritten": rewritten,
                "total_rows": int(props.get("total-records", 0)),
                "run_id": prop("run-id"),
                "source": prop("source"),
                "range": prop("range"),
                "status": status,
            }
        )
    return records


def _flows(history: list[dict[str, Any]], recent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chart's bars: + rows added, - rows removed, per snapshot at its commit time."""
    first = len(history) - len(recent) + 1
    return [
        {
            "snapshot": i,
            "snapshot_id": r["snapshot_id"],
            "committed_at": r["committed_at"],
            "change": kind if r["status"] != "rolled back" else f"{kind} (rolled back)",
            "rows": sign * r[col],
            "run_id": r["run_id"],
        }
        for i, r in enumerate(recent, start=first)
        for kind, col, sign in (("added", "rows_added", 1), ("removed", "rows_removed", -1))
        if r[col]
    ]


def _rejects_by_load(source: Source) -> tuple[list[dict[str, Any]], str | None]:
    rejects = source.identifier + "_rejects"
    if not source.has(rejects):
        return [], None
    ns, name = rejects.rsplit(".", 1)
    target = f"{quote(ns)}.{quote(name)}"
    cols = [r[0] for r in source.con.execute(f"DESCRIBE {target}").fetchall()]
    reason = next((c for c in REASON_COLUMNS if c in cols), None)
    labels = [c for c in LABEL_COLUMNS if c in cols] or ([RUN_COLUMN] if RUN_COLUMN in cols else [])
    if reason is None or not labels:
        return [], rejects
    texts = [f"CAST({quote(c)} AS VARCHAR)" for c in labels]
    # each part once: a from-file load's range key is its source
    parts = [
        t if not texts[:i] else f"CASE WHEN {t} IN ({', '.join(texts[:i])}) THEN NULL ELSE {t} END"
        for i, t in enumerate(texts)
    ]
    label = f"concat_ws(' ', {', '.join(parts)})"
    run = f"{quote(RUN_COLUMN)}" if RUN_COLUMN in cols else "NULL"
    records = source.rows(
        f"""
        WITH r AS (
            SELECT trim({label}) AS load, {run} AS run_id, {quote(reason)} AS reason
            FROM {target}
        ),
        recent AS (SELECT load FROM r GROUP BY load ORDER BY load DESC LIMIT {REJECTS_LOADS})
        SELECT load, run_id, coalesce(reason, '(none)') AS reason, count(*) AS rows
        FROM r WHERE load IN (SELECT load FROM recent)
        GROUP BY ALL ORDER BY load, run_id, reason
        """
    )
    return records, rejects


def section(source: Source) -> Section:
    out = Section("Data quality")
    rejects, rejects_table = _rejects_by_load(source)
    if rejects_table is None:
        out.notes.append(f"no rejects table ({source.identifier}_rejects) for this table")
    out.items.append(
        charts.make(
            "rejects_by_reason",
            f"Rejected rows by reason per load ({rejects_table or 'no rejects table'})",
            rejects,
            charts.bars("load", "rows", color="reason", horizontal=True, y_title="rows rejected"),
            note="" if rejects else "no rejected rows",
        )
    )
    if rejects:
        out.items.append(TableBlock("rejects", "Rejected rows per load and reason", rejects))
    history = snapshot_history(source.table)
    recent = history[-HISTORY_SNAPSHOTS:]
    flows = _flows(history, recent)
    rolled_back = sum(1 for r in recent if r["status"] == "rolled back")
    note = f"the last {len(recent)} of {len(history)} snapshots" if history else "no snapshot yet"
    if rolled_back:
        note += f"; {rolled_back} rolled back (pale bars: no longer part of the table)"
    if any(r["rows_rewritten"] for r in recent):
        note += "; rows a snapshot copied unchanged into new files are not counted"
    out.items.append(
        charts.make(
            "rows_per_snapshot",
            "Rows added (+) and removed (-) per snapshot",
            flows,
            charts.snapshot_flows("committed_at", "rows", "change"),
            note=note,
        )
    )
    out.items.append(
        TableBlock(
            "snapshots",
            "Snapshot history (newest first)",
            list(reversed(recent)),
            note="" if history else "the table has no snapshot yet (never loaded)",
        )
    )
    # the load the table is at now: after a rollback, not the newest (rolled-back) commit
    last = next((r for r in reversed(history) if r["status"] == "current"), None)
    last = last or (history[-1] if history else None)
    current = source.table.current_snapshot()
    props = current.summary.additional_properties if current and current.summary else {}
    figures = {  # the load's own counts (rows fetched/loaded/rejected), as recorded
        k.removeprefix(SNAPSHOT_PROPERTY_PREFIX): int(v) if v.isdigit() else v
        for k, v in props.items()
        if k.startswith(SNAPSHOT_PROPERTY_PREFIX)
        and k.removeprefix(SNAPSHOT_PROPERTY_PREFIX) not in ("run-id", "source", "range")
    }
    out.items.append(
        TableBlock(
            "last_load",
            "Last load",
            [{"field": k, "value": v} for k, v in {**(last or {}), **figures}.items()]
            if last
            else [],
            note="" if last else "never loaded",
        )
    )
    return out
