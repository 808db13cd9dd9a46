"""``civiclake socrata``: any dataset of any Socrata portal."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.table import Table as RichTable

from civiclake.cli._base import (
    ALLOW_EMPTY_OPTION,
    ENGINE_OPTION,
    LAKE_BLOCK_OPTION,
    LAKE_OPTION,
    PAGE_SIZE_OPTION,
    TOKEN_BLOCK_OPTION,
    WAREHOUSE_BLOCK_OPTION,
    OutputFormat,
    group,
    lake_settings,
    out,
    parse_date,
    print_table,
    use_engine,
    user_errors,
    wrote_records,
)
from civiclake.cli._runs import command_flow_run, print_summary, start_run, summary_on
from civiclake.flows import preflight
from civiclake.warehouse import describe_kinds

socrata_app = group("Any dataset of any Socrata portal, typed from its metadata, kept up to date.")


PORTAL_HELP = (
    "Portal URL (https://host) instead of CIVICLAKE_SOCRATA_URL [default: https://data.ny.gov] "
    "(for a bare dataset id)."
)
DATASET_HELP = "A 4x4 id (erm2-nwe9), a dataset URL of any portal, or a name from the config."


@socrata_app.command("describe")
@user_errors
def socrata_describe(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    portal: str | None = typer.Option(None, "--portal", help=PORTAL_HELP),
    table: str | None = typer.Option(None, "--table", help="NS.NAME [default: socrata.<id>]."),
    partition: str | None = typer.Option(
        None, "--partition", help="month(COL), day(COL), year(COL) or none [default: none]."
    ),
) -> None:
    """Name, rows and columns of a dataset: Socrata type -> the column type it becomes."""
    from civiclake.sources.socrata_plan import describe

    settings = lake_settings()
    plan = describe(settings, dataset, portal=portal, table=table, partition=partition)
    spec = plan.spec
    out.print(f"{spec.name} ({spec.portal}/{spec.dataset_id})", soft_wrap=True)
    rows = f"{spec.row_count:,}" if spec.row_count is not None else "unknown"
    out.print(f"rows: {rows}   table: {spec.table}   partition: {spec.partition}", soft_wrap=True)
    out.print(f"run would load: {plan.mode_text}", soft_wrap=True)
    columns = RichTable("column", "field", "Socrata type", "type")
    for column in spec.columns:
        columns.add_row(column.name, column.field, column.socrata_type, str(column.iceberg_type))
        if column.has_coordinates:
            for axis in ("longitude", "latitude"):
                columns.add_row(f"{column.name}_{axis}", "", f"({axis})", "double")
    print_table(columns)


@socrata_app.command("run")
@user_errors
def socrata_run(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    table: str | None = typer.Option(None, "--table", help="NS.NAME [default: socrata.<id>]."),
    full: bool = typer.Option(
        False, "--full", help="Fetch everything and replace the table (drops deleted rows)."
    ),
    partition: str | None = typer.Option(
        None, "--partition", help="month(COL), day(COL), year(COL) or none [default: none]."
    ),
    where: str | None = typer.Option(None, "--where", help="A SoQL $where filter."),
    date_field: str | None = typer.Option(
        None,
        "--date-field",
        help="Range mode: replace the rows with this date column in [--start-date, --stop-date).",
    ),
    start_date: str | None = typer.Option(
        None, "--start-date", help="Range mode: first date to load (YYYY-MM-DD)."
    ),
    stop_date: str | None = typer.Option(
        None,
        "--stop-date",
        help="Range mode: date after the last one (exclusive) [default: today].",
    ),
    portal: str | None = typer.Option(None, "--portal", help=PORTAL_HELP),
    page_size: int | None = PAGE_SIZE_OPTION,
    lake: str | None = LAKE_OPTION,
    lake_block: str | None = LAKE_BLOCK_OPTION,
    socrata_token_block: str | None = TOKEN_BLOCK_OPTION,
    to: str | None = typer.Option(
        None,
        "--to",
        help=f"Also load a warehouse: {describe_kinds()} (merged by :id, or the --date-field "
        "range) [default: none].",
    ),
    warehouse_block: str | None = WAREHOUSE_BLOCK_OPTION,
    allow_empty: bool = ALLOW_EMPTY_OPTION,
    engine: str | None = ENGINE_OPTION,
) -> None:
    """Load a dataset into Iceberg: everything first, then rows updated since the last run."""
    use_engine(engine)
    parameters = {  # the flow's: the checks before Prefect and the run take the same
        "dataset": dataset,
        "table": table,
        "full": full,
        "partition": partition,
        "where": where,
        "date_field": date_field,
        "start_date": parse_date("--start-date", start_date),
        "stop_date": parse_date("--stop-date", stop_date),
        "portal": portal,
        "page_size": page_size,
        "lake": lake,
        "lake_block": lake_block,
        "socrata_token_block": socrata_token_block,
        "to": to,
        "warehouse_block": warehouse_block,
        "allow_empty": allow_empty,
    }
    # a bad id, a 404, a wrong column, the lake: before Prefect starts
    preflight.socrata(lake_settings(lake), **parameters)

    flows = start_run("socrata")
    from civiclake.flows._sync import WarehouseNotSynced

    with command_flow_run(), summary_on(WarehouseNotSynced):
        summary = flows.socrata_dataset(**parameters)
    print_summary(summary)


@socrata_app.command("list")
@user_errors
def socrata_list(
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Datasets declared in the config file ([datasets.NAME]) and their last load."""
    from civiclake import tables

    settings = lake_settings(lake)
    if not settings.datasets and output is OutputFormat.table:
        out.print('no datasets in the config file: add [datasets.NAME] with id = "xxxx-xxxx"')
        return
    from civiclake.sources.socrata_dataset import default_table, parse_dataset

    loaded = (
        {s.identifier: s for s in tables.summarize(tables.load_catalog(settings))}
        if settings.datasets
        else {}
    )
    records = []
    for name, config in sorted(settings.datasets.items()):
        portal, dataset_id = parse_dataset(config.id, config.portal or settings.socrata_url)
        table_name = config.table or default_table(dataset_id)
        last = loaded.get(table_name)
        records.append(
            {
                "name": name,
                "dataset": f"{portal}/{dataset_id}",
                "table": table_name,
                "rows": last.rows if last else None,
                "last_load_at": last.last_load_at.isoformat()
                if last and last.last_load_at
                else None,
            }
        )
    if wrote_records(records, ("name", "dataset", "table", "rows", "last_load_at"), output):
        return
    listing = RichTable("name", "dataset", "table", "rows", "last load (UTC)")
    for r in records:
        when = r["last_load_at"]
        listing.add_row(
            r["name"],
            r["dataset"],
            r["table"],
            f"{r['rows']:,}" if r["rows"] is not None else "",
            datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M:%S") if when else "",
        )
    print_table(listing)
