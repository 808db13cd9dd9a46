"""``civiclake maintain``: snapshot expiry, unreferenced and orphan files, compaction, and the
raw and stage zones. Metadata work, no Prefect flow; each table under the lock its loads take
(``flows/_locks.py``), as the scheduled ``civiclake-maintenance`` flow does: a compaction or
an expiry never interleaves with a load's commits."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Any

import typer
from rich.table import Table as RichTable

from civiclake.cli._base import (
    LAKE_OPTION,
    count_text,
    err,
    lake_settings,
    out,
    print_table,
    size_text,
    user_errors,
)


class MaintainFormat(StrEnum):
    table = "table"
    json = "json"


@user_errors
def maintain_command(
    names: list[str] = typer.Argument(
        None,
        metavar="TABLE",
        help="Tables (namespace.table) [default: every table].",
        show_default=False,
    ),
    retain_days: int = typer.Option(
        7, "--retain-days", min=0, help="Keep snapshots younger than this many days."
    ),
    retain_last: int = typer.Option(
        10, "--retain-last", min=1, help="Always keep the last N snapshots of the current history."
    ),
    orphans_older_than: str = typer.Option(
        "3d",
        "--orphans-older-than",
        help="Remove orphan files (crashed runs) older than this: Nd or Nh; 0 means now "
        "(only when no load is running: a running load's files are orphans until it commits).",
    ),
    compact: bool = typer.Option(
        False, "--compact", help="Rewrite each partition's small files into few large ones."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be removed (with sizes); change nothing."
    ),
    output: MaintainFormat = typer.Option(
        MaintainFormat.table, "--format", "-f", help="table for people; json for scripts."
    ),
    raw_retain_days: int = typer.Option(
        7,
        "--raw-retain-days",
        min=1,
        help="Without table names: remove raw and stage zone folders older than this many "
        "days (never a series' latest load).",
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Expire old snapshots, delete files nothing references, optionally compact; prune the
    raw and stage zones."""
    from civiclake import tables
    from civiclake.flows._locks import covering_table, table_lock
    from civiclake.tables import maintenance

    options = maintenance.MaintainOptions(
        retain_days=retain_days,
        retain_last=retain_last,
        orphans_older_than=maintenance.parse_duration(orphans_older_than),
        compact=compact,
        dry_run=dry_run,
    )
    settings = lake_settings(lake)
    catalog = tables.load_catalog(settings)
    chosen = maintenance.resolve_tables(catalog, list(names or []))
    every = maintenance.resolve_tables(catalog, [])
    locations = maintenance.table_locations(catalog, every)
    the_lake = settings.lake()
    if not names:  # the whole lake: its raw and stage zones too (civiclake.tables.zones)
        _prune_zones(the_lake, raw_retain_days, dry_run, output is MaintainFormat.json)
    if not chosen:
        out.print("no tables yet: nothing to maintain")
        return
    reports = []
    for name in chosen:
        err.print(f"maintaining {name} ...", highlight=False)
        with table_lock(covering_table(name), settings):  # waits for a running load's commits
            reports.append(
                maintenance.maintain_table(
                    catalog, name, the_lake, options, other_locations=locations
                )
            )
    if output is MaintainFormat.json:
        payload = []
        for r in reports:
            item = r.as_json()
            if dry_run:
                item["files"] = [{"path": f.url, "size": f.size, "kind": f.kind} for f in r.removed]
            payload.append(item)
        from civiclake._private.values import dumps

        sys.stdout.write(dumps(payload) + "\n")
        return
    if dry_run:
        for r in reports:
            for f in r.removed:
                out.print(
                    f"would remove {f.kind} {f.url} ({size_text(f.size)})",
                    highlight=False,
                    soft_wrap=True,
                )
    verb = "would remove" if dry_run else "removed"
    view = RichTable(
        "table",
        "snapshots expired",
        "kept",
        f"files {verb}",
        "bytes",
        "orphans (kept young)",
        "files compacted",
        "files before -> after",
        "seconds",
        title="civiclake maintain" + (" --dry-run (nothing changed)" if dry_run else ""),
    )
    view.columns[0].no_wrap = True
    for r in reports:
        view.add_row(
            r.table,
            count_text(len(r.snapshots_expired)),
            count_text(r.snapshots_kept),
            count_text(len(r.removed)),
            size_text(r.bytes_removed),
            f"{len(r.orphans_removed):,} ({r.orphans_kept:,})",
            f"{r.files_compacted:,} -> {r.files_written:,}" if compact else "",
            f"{r.files_before:,} -> {r.files_after:,}",
            f"{r.seconds:.2f}",
        )
    print_table(view)


def _prune_zones(the_lake: Any, retain_days: int, dry_run: bool, quiet: bool) -> None:
    """Prune the raw and stage zones; the files (dry run) and a summary line on stderr when
    the table output is JSON, on stdout otherwise."""
    from civiclake.tables.zones import prune_zones

    err.print("pruning the raw and stage zones ...", highlight=False)
    report = prune_zones(the_lake, retain_days, dry_run=dry_run)
    console = err if quiet else out
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        for f in report.removed:
            console.print(
                f"would remove {f.zone} {f.url} ({size_text(f.size)})",
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        f"raw and stage zones: {verb} {report.folders_removed:,} load folder(s) older than "
        f"{retain_days} days, {len(report.removed):,} files, {size_text(report.bytes_removed)}; "
        f"kept {report.folders_kept_latest:,} latest and {report.folders_kept_young:,} younger",
        highlight=False,
        soft_wrap=True,
    )
