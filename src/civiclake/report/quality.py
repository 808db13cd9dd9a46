"""The data-quality section every page ends with: rejects by reason per load, the rows each
snapshot added and removed (from the table's own history, with civiclake's run id, source and
range), and the last load. History comes from Iceberg metadata, rejects from one SQL aggregate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pyiceberg.table import Table

from civiclake.report import charts
from civiclake.report._source import Source, quote
from civiclake.report.page import Section, TableBlock
from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX

HISTORY_SNAPSHOTS = 60  # the most recent ones: a daily schedule makes thousands in a decade
REASON_COLUMNS = ("reason", "reject_reason")
RUN_COLUMN = "load_run_id"
LABEL_COLUMNS = ("load_range", "source_month", "load_source")
REJECTS_LOADS = 40


def snapshot_history(table: Table) -> list[dict[str, Any]]:
    """Every snapshot, oldest first: when, operation, rows added/removed/total, run, source."""
    records = []
    for snap in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms):
        summary = snap.summary
        props = summary.additional_properties if summary else {}

        def prop(name: str, props: dict[str, str] = props) -> str:
            return props.get(SNAPSHOT_PROPERTY_PREFIX + name, "")

        records.append(
            {
                # ids as text: never thousands separators, never float-rounded by a chart
                "snapshot_id": str(snap.snapshot_id),
                "committed_at": datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "operation": summary.operation.value if summary else "",
                "rows_added": int(props.get("added-records", 0)),
                "rows_removed": int(props.get("deleted-records", 0)),
                "total_rows": int(props.get("total-records", 0)),
                "run_id": prop("run-id"),
                "source": prop("source"),
                "range": prop("range"),
            }
        )
    return records


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
    flows = [
        {"snapshot": f"{i}", "change": kind, "rows": sign * r[col]}
        for i, r in enumerate(recent, start=len(history) - len(recent) + 1)
        for kind, col, sign in (("added", "rows_added", 1), ("removed", "rows_removed", -1))
        if r[col]
    ]
    out.items.append(
        charts.make(
            "rows_per_snapshot",
            "Rows added (+) and removed (-) per snapshot",
            flows,
            charts.bars("snapshot", "rows", color="change", x_type="O", sort=None, stack=True),
            note=f"the last {len(recent)} of {len(history)} snapshots"
            if history
            else "no snapshot yet",
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
    last = history[-1] if history else None
    current = source.table.current_snapshot()
    props = current.summary.additional_properties if current and current.summary else {}
    figures = {  # the load's own counts (rows fetched/loaded/rejected), as recorded
        k.removeprefix(SNAPSHOT_PROPERTY_PREFIX): v
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
