"""``civiclake bnt``: MTA Bridges & Tunnels hourly traffic."""

from __future__ import annotations

import os

import typer

from civiclake._private import head_start
from civiclake.cli._base import (
    ALLOW_EMPTY_OPTION,
    ENGINE_OPTION,
    LAKE_BLOCK_OPTION,
    LAKE_OPTION,
    PAGE_SIZE_OPTION,
    TOKEN_BLOCK_OPTION,
    WAREHOUSE_BLOCK_OPTION,
    group,
    lake_settings,
    parse_date,
    use_engine,
    user_errors,
)
from civiclake.cli._runs import command_flow_run, print_summary, start_run, summary_on
from civiclake.errors import ParameterError
from civiclake.flows import preflight
from civiclake.warehouse import describe_kinds

bnt_app = group("MTA Bridges & Tunnels hourly traffic (data.ny.gov qzve-kjga).")


@bnt_app.command("run")
@user_errors
def bnt_run(
    start_date: str | None = typer.Option(
        None, "--start-date", help="First date to load (YYYY-MM-DD). Omitted: incremental."
    ),
    stop_date: str | None = typer.Option(
        None, "--stop-date", help="Date after the last one to load (exclusive). Omitted: today."
    ),
    from_file: str | None = typer.Option(
        None, "--from-file", help="Load a bulk export (CSV or JSON) instead of the API."
    ),
    lookback_days: int | None = typer.Option(
        None,
        "--lookback-days",
        min=0,
        help="Incremental runs re-fetch this many days before the high-water mark [default: 7].",
    ),
    page_size: int | None = PAGE_SIZE_OPTION,
    lake: str | None = LAKE_OPTION,
    lake_block: str | None = LAKE_BLOCK_OPTION,
    socrata_token_block: str | None = TOKEN_BLOCK_OPTION,
    to: str | None = typer.Option(
        None,
        "--to",
        help=f"Also load a warehouse: {describe_kinds()} [default: none].",
    ),
    warehouse_block: str | None = WAREHOUSE_BLOCK_OPTION,
    allow_empty: bool = ALLOW_EMPTY_OPTION,
    engine: str | None = ENGINE_OPTION,
    portal: str | None = typer.Option(
        None,
        "--portal",
        help="Portal serving the dataset (https://host) instead of CIVICLAKE_SOCRATA_URL "
        "[default: https://data.ny.gov].",
    ),
) -> None:
    """Load MTA B&T hourly traffic into mta.bnt_traffic_hourly (replaces the date range)."""
    from civiclake.sources.socrata_dataset import check_portal

    use_engine(engine)

    if portal is not None:
        if from_file:
            raise ParameterError("--portal is for the API: drop it with --from-file")
        # the run (checks and flow, in this process) reads its portal from the environment
        os.environ["CIVICLAKE_SOCRATA_URL"] = check_portal(portal)
    elif not from_file:  # CIVICLAKE_SOCRATA_URL: bad input, not retried
        check_portal(lake_settings(lake).socrata_url)
    parameters = {  # the flow's: the checks before Prefect and the run take the same
        "start_date": parse_date("--start-date", start_date),
        "stop_date": parse_date("--stop-date", stop_date),
        "from_file": from_file,
        "lookback_days": lookback_days,
        "page_size": page_size,
        "lake": lake,
        "lake_block": lake_block,
        "socrata_token_block": socrata_token_block,
        "to": to,
        "warehouse_block": warehouse_block,
        "allow_empty": allow_empty,
    }
    preflight.bnt(lake_settings(lake), **parameters)

    def fetch_ahead() -> None:  # the API fetch, begun while Prefect imports (2-3 s)
        # not with blocks (they need Prefect), nor with --to: the flow checks the warehouse
        # before anything is fetched
        if not (from_file or lake_block or socrata_token_block or to):
            from civiclake.sources import bnt_fetch

            bnt_fetch.fetch_ahead(
                lake_settings(lake),
                start_date=parameters["start_date"],
                stop_date=parameters["stop_date"],
                lookback_days=lookback_days,
                page_size=page_size,
            )

    try:
        flows = start_run("bnt", fetch_ahead)
        from civiclake.flows._sync import WarehouseNotSynced

        with command_flow_run(), summary_on(WarehouseNotSynced):
            summary = flows.bnt_hourly_traffic(**parameters)
    finally:
        head_start.cancel_all()  # a fetch the flow did not take: stopped, its pages removed
    print_summary(summary)
