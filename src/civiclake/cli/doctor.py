"""``civiclake doctor``: the lake, the catalog and the warehouses, checked."""

from __future__ import annotations

import typer
from rich.text import Text

from civiclake._private.display import styled
from civiclake.cli._base import LAKE_OPTION, lake_settings, out, user_errors
from civiclake.errors import CivicLakeError, ParameterError


@user_errors
def doctor(
    to: list[str] = typer.Option(
        [], "--to", help="Warehouse(s) to check [default: duckdb and every one configured]."
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Check that the lake, the Iceberg catalog and the warehouses are reachable and writable."""
    from civiclake.doctor import run_checks
    from civiclake.warehouse import WAREHOUSE_KINDS

    unknown = [kind for kind in to if kind not in WAREHOUSE_KINDS]
    if unknown:
        choices = ", ".join(WAREHOUSE_KINDS)
        raise ParameterError(f"--to: unknown warehouse {unknown[0]!r} ({choices})")
    failed = 0
    for check in run_checks(lake_settings(lake), list(to) or None):
        mark = styled("ok  ", "green") if check.ok else styled("FAIL", "red")
        out.print(Text.assemble(mark, f" {check.name}: {check.detail}"), soft_wrap=True)
        failed += not check.ok
    if failed:
        raise CivicLakeError(f"{failed} check{'s' if failed > 1 else ''} failed")
