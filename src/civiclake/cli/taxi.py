"""``civiclake taxi``: NYC TLC trip records by month."""

from __future__ import annotations

import re
from typing import Any

import typer
from rich.table import Table as RichTable

from civiclake._private.display import styled
from civiclake.cli._base import (
    ALLOW_EMPTY_OPTION,
    ENGINE_OPTION,
    LAKE_BLOCK_OPTION,
    LAKE_OPTION,
    WAREHOUSE_BLOCK_OPTION,
    group,
    lake_settings,
    out,
    partitions_text,
    print_table,
    use_engine,
    user_errors,
)
from civiclake.cli._runs import command_flow_run, start_run
from civiclake.errors import ParameterError
from civiclake.flows import preflight

taxi_app = group("NYC TLC taxi trips (yellow, green, fhv) by month.")


TAXI_FILE_PATTERN = r"(yellow|green|fhv)_tripdata_(\d{4})-(\d{2})(?!\d)"


@taxi_app.command("run")
@user_errors
def taxi_run(
    color: str | None = typer.Option(None, "--color", help="yellow, green or fhv."),
    year: int | None = typer.Option(None, "--year", help="Year of the months."),
    months: str | None = typer.Option(None, "--months", help="10, or a list like 1-3,10."),
    to: str = typer.Option(
        "duckdb", "--to", help="Warehouse: duckdb (embedded), postgres or bigquery."
    ),
    from_file: str | None = typer.Option(
        None,
        "--from-file",
        help="A month's file already on disk (CSV, CSV.gz or Parquet). Its name "
        "(green_tripdata_2020-10.csv.gz) gives --color, --year and --months; an option that "
        "contradicts it is refused.",
    ),
    lake: str | None = LAKE_OPTION,
    lake_block: str | None = LAKE_BLOCK_OPTION,
    warehouse_block: str | None = WAREHOUSE_BLOCK_OPTION,
    allow_empty: bool = ALLOW_EMPTY_OPTION,
    engine: str | None = ENGINE_OPTION,
) -> None:
    """Load TLC months: web -> lake (Parquet) -> Iceberg tlc.{color}_trips -> warehouse."""
    use_engine(engine)
    if from_file:
        preflight.check_from_file(from_file, preflight.TLC_FILE_SUFFIXES)
        match = re.search(TAXI_FILE_PATTERN, from_file.rsplit("/", 1)[-1])
        if match:  # the file's name says what it holds; an option saying otherwise is refused
            named = {
                "--color": match.group(1),
                "--year": match.group(2),
                "--months": match.group(3),
            }
            given = {"--color": color, "--year": year, "--months": months}
            for option, value in given.items():
                if value is not None and str(value).lstrip("0") != named[option].lstrip("0"):
                    raise ParameterError(
                        f"{option} {value} contradicts the file name "
                        f"{from_file.rsplit('/', 1)[-1]} ({option} {named[option]}): "
                        f"drop {option} or rename the file"
                    )
            color = color or match.group(1)
            year = year or int(match.group(2))
            months = months or str(int(match.group(3)))
    if color is None or year is None or months is None:
        raise ParameterError(
            "give --color, --year and --months (e.g. --color green --year 2020 --months 10)"
        )
    spec, wanted = preflight.tlc(
        lake_settings(lake),
        color=color,
        year=year,
        months=months,
        from_file=from_file,
        to=to,
        warehouse_block=warehouse_block,
        lake_block=lake_block,
    )

    flows = start_run("tlc")
    from civiclake.flows._sync import WarehouseNotSynced

    try:
        with command_flow_run():
            summary = flows.tlc_taxi_trips(
                color=spec.color,
                year=year,
                months=[m.month for m in wanted],
                to=to,
                from_file=from_file,
                lake=lake,
                lake_block=lake_block,
                warehouse_block=warehouse_block,
                allow_empty=allow_empty,
            )
    except (flows.MonthsFailed, WarehouseNotSynced) as exc:
        if exc.summary:
            print_taxi_summary(exc.summary)
        raise
    print_taxi_summary(summary)


def print_taxi_summary(summary: dict[str, Any]) -> None:
    table = RichTable(
        "month",
        "status",
        "read",
        "loaded",
        "rejected",
        "by rule",
        "partitions touched",
        "snapshot id",
        "seconds",
        title=f"{summary['table']} -> Iceberg + {summary['to']}",
    )
    for r in summary["months"]:
        if r["status"] == "failed":
            table.add_row(r["month"], styled("failed", "red"), "", "", "", "", "", "", "")
            continue
        status = "loaded"
        if r["status"] == "not synced":  # in the lake, not in the warehouse: say which snapshot
            status = styled(r["warehouse_line"], "red")
        rules = ", ".join(f"{k} {v:,}" for k, v in r["rejected_by_rule"].items() if v)
        table.add_row(
            r["month"],
            status,
            f"{r['rows_read']:,}",
            f"{r['rows_loaded']:,}",
            f"{r['rows_rejected']:,}",
            rules,
            partitions_text(r.get("partitions_touched", [])),
            str(r.get("iceberg_snapshot_id", "")),
            str(r["duration_s"]),
        )
    print_table(table)
    if "warehouse_resynced_rows" in summary:
        out.print(
            f"{summary['to']}: {summary['table']} re-synced from the lake "
            f"({summary['warehouse_resynced_rows']:,} rows)"
        )
