"""The ``civiclake-maintenance`` flow: ``civiclake maintain`` on a schedule, under the load locks.

Each table is maintained in its own task while holding the same table lock the loads take
(``flows/_locks.py``; a rejects table: its table's lock, under which loads commit it), so a
scheduled maintenance never interleaves with a load of the same table. ``civiclake maintain``
runs the same code without Prefect, under the same locks.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from civiclake.blocks import Blocks, settings_for
from civiclake.flows._locks import covering_table, table_lock

FLOW_NAME = "civiclake-maintenance"
DurationParam = Annotated[
    str,
    Field(pattern=r"^\s*(0|\d+\s*[dDhH])\s*$", description="Nd or Nh; 0 means now"),
]


@task(name="maintain-table", cache_policy=NO_CACHE)
def maintain_one(
    name: str,
    retain_days: int,
    retain_last: int,
    orphans_older_than: str,
    compact: bool,
    dry_run: bool,
    blocks: Blocks = None,
) -> dict[str, Any]:
    """One table, holding its load lock for the whole maintenance."""
    from civiclake import tables
    from civiclake.tables import maintenance

    settings = settings_for(blocks)
    catalog = tables.load_catalog(settings)
    options = maintenance.MaintainOptions(
        retain_days=retain_days,
        retain_last=retain_last,
        orphans_older_than=maintenance.parse_duration(orphans_older_than),
        compact=compact,
        dry_run=dry_run,
    )
    every = maintenance.resolve_tables(catalog, [])
    log = get_run_logger()
    with table_lock(covering_table(name), settings):
        report = maintenance.maintain_table(
            catalog,
            name,
            settings.lake(),
            options,
            other_locations=maintenance.table_locations(catalog, every),
            log=log,
        )
    summary = report.as_json()
    log.info(
        "%s: %d snapshots expired, %d files (%d bytes) removed, %d orphans kept (young)",
        name,
        summary["snapshots_expired"],
        summary["files_removed"],
        summary["bytes_removed"],
        summary["orphans_kept_young"],
    )
    return summary


@task(name="prune-zones", cache_policy=NO_CACHE)
def prune_zones(raw_retain_days: int, dry_run: bool, blocks: Blocks = None) -> dict[str, Any]:
    """The raw and stage zones' old load folders (``civiclake.tables.zones``)."""
    from civiclake.tables import zones

    report = zones.prune_zones(settings_for(blocks).lake(), raw_retain_days, dry_run=dry_run)
    get_run_logger().info(
        "raw and stage zones: %s %d load folders, %d files (%d bytes); kept %d latest, %d young",
        "would remove" if dry_run else "removed",
        report.folders_removed,
        len(report.removed),
        report.bytes_removed,
        report.folders_kept_latest,
        report.folders_kept_young,
    )
    return report.as_json()


@flow(name=FLOW_NAME, validate_parameters=True)
def civiclake_maintenance(
    tables: Annotated[
        list[str] | None, Field(description="Tables (namespace.table); empty: every table")
    ] = None,
    retain_days: Annotated[int, Field(ge=0, description="Keep snapshots younger than this")] = 7,
    retain_last: Annotated[int, Field(ge=1, description="Always keep the last N snapshots")] = 10,
    orphans_older_than: DurationParam = "3d",
    compact: Annotated[bool, Field(description="Rewrite small files of each partition")] = False,
    dry_run: Annotated[bool, Field(description="Report only, change nothing")] = False,
    lake: Annotated[
        str | None, Field(description="Lake URL (abfs://, s3://, gs://, file://); empty: settings")
    ] = None,
    lake_block: Annotated[str | None, Field(description="civiclake-lake block name")] = None,
    raw_retain_days: Annotated[
        int, Field(ge=1, description="Raw/stage load folders older than this go (no tables named)")
    ] = 7,
) -> list[dict[str, Any]]:
    """Expire snapshots, remove unreferenced and old orphan files, optionally compact."""
    from civiclake import tables as tables_pkg
    from civiclake.tables import maintenance

    blocks = {"lake": lake, "lake_block": lake_block}
    settings = settings_for(blocks)
    maintenance.parse_duration(orphans_older_than)  # a bad value fails before any work
    chosen = maintenance.resolve_tables(tables_pkg.load_catalog(settings), list(tables or []))
    reports = [
        maintain_one(
            name, retain_days, retain_last, orphans_older_than, compact, dry_run, blocks=blocks
        )
        for name in chosen
    ]
    pruned = prune_zones(raw_retain_days, dry_run, blocks=blocks) if not tables else None
    rows = "\n".join(
        f"| {r['table']} | {r['snapshots_expired']:,} | {r['files_removed']:,} | "
        f"{r['bytes_removed']:,} | {r['files_compacted']:,} |"
        for r in reports
    )
    create_markdown_artifact(
        key="civiclake-maintenance-summary",
        markdown=(
            f"## {FLOW_NAME}{' (dry run)' if dry_run else ''}\n\n"
            "| table | snapshots expired | files removed | bytes removed | files compacted |\n"
            f"|---|---|---|---|---|\n{rows}\n"
            + (
                f"\nRaw and stage zones (older than {raw_retain_days} days): "
                f"{pruned['folders_removed']:,} load folders, {pruned['files_removed']:,} files, "
                f"{pruned['bytes_removed']:,} bytes {'to remove' if dry_run else 'removed'}\n"
                if pruned
                else ""
            )
        ),
        description="snapshots expired, files removed, files compacted",
    )
    return reports
