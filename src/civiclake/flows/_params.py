"""Parameter types whose JSON schema lets the Prefect server reject bad values before a run
starts (the UI's Custom run form shows the same constraints)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Field, WithJsonSchema

from civiclake.warehouse import WAREHOUSE_KINDS

DateParam = Annotated[
    date,
    WithJsonSchema(
        {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
    ),
]
"""A date, YYYY-MM-DD: Prefect's server checks the pattern (it does not check ``format``)."""

MonthNumber = Annotated[int, Field(ge=1, le=12)]


WarehouseKind = StrEnum(  # type: ignore[misc]
    "WarehouseKind", {kind: kind for kind in WAREHOUSE_KINDS}, module=__name__
)
WarehouseKind.__doc__ = (
    "A warehouse a flow loads (an enum: the server refuses any other value); its members are "
    "the registry's (civiclake.warehouse.WAREHOUSE_MODULES)."
)


# Parameters several flows share: one declaration each, so the UI reads the same everywhere.
PageSizeParam = Annotated[int | None, Field(ge=1, le=1_000_000, description="Rows per API page")]
LakeParam = Annotated[
    str | None, Field(description="Lake URL (abfs://, s3://, gs://, file://); empty: settings")
]
LakeBlockParam = Annotated[str | None, Field(description="civiclake-lake block name")]
TokenBlockParam = Annotated[
    str | None, Field(description="Secret block with the Socrata app token")
]
AlsoWarehouseParam = Annotated[
    WarehouseKind | None, Field(description="Also load this warehouse; empty: Iceberg only")
]
AllowEmptyParam = Annotated[
    bool,
    Field(description="Let a load with no row empty a range that has rows (refused otherwise)"),
]
WarehouseBlockParam = Annotated[
    str | None, Field(description="civiclake-postgres or civiclake-bigquery block name")
]
