"""The key figures each flow run adds to its summary artifact: a chart (an inline SVG image, which
Prefect's UI renders: see tests/deploy for the browser check) and tables whose numbers add up."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest
from report_support import Lake

from civiclake import tables
from civiclake.config import get_settings

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
IMAGE = re.compile(r"!\[([^\]]*)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)")


def artifact_of(key: str, run_id: str) -> str:
    """The markdown of the run's artifact ``key`` (the run id is in the run's own summary)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list[str]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
        return [str(a.data) for a in found if a.flow_run_id and str(a.flow_run_id) == run_id]

    (markdown,) = asyncio.run(read())
    return markdown


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """The body rows of the markdown table that starts with ``header``."""
    lines = markdown[markdown.index(header) :].splitlines()
    body = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    return body


def last_run_id(identifier: str) -> str:
    table = tables.load_catalog(get_settings()).load_table(identifier)
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    return snapshot.summary.additional_properties["civiclake.run-id"]


def test_bnt_artifact_shows_what_was_loaded(at_lake: Lake) -> None:
    markdown = artifact_of("bnt-load-summary", last_run_id("mta.bnt_traffic_hourly"))
    assert "| rows_loaded | 6,720 |" in markdown  # the summary table is still there
    ((alt, data),) = IMAGE.findall(markdown)
    assert alt == "vehicles per day"
    assert base64.b64decode(data).decode().startswith("<svg")
    days = table_rows(markdown, "| day | rows | vehicles |")
    assert len(days) == 14
    assert sum(int(r[1].replace(",", "")) for r in days) == 6_720
    rejects = table_rows(markdown, "| reason | rows |")
    assert sum(int(r[1]) for r in rejects) == 4
    assert len(rejects) == 4


def test_tlc_artifact_shows_trips_per_day_and_rejects(at_lake: Lake) -> None:
    from prefect.client.orchestration import get_client

    month_run = last_run_id("tlc.green_trips")  # the month subflow's run; its parent has it

    async def parent() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(month_run)
            task_run = await client.read_task_run(run.parent_task_run_id)
            return str(task_run.flow_run_id)

    markdown = artifact_of("tlc-load-summary", asyncio.run(parent()))
    ((alt, _),) = IMAGE.findall(markdown)
    assert alt == "trips per day"
    days = table_rows(markdown, "| day | rows |")
    assert len(days) == 31
    assert sum(int(r[1].replace(",", "")) for r in days) == 94_852
    rules = {r[1]: int(r[2]) for r in table_rows(markdown, "| month | rule | rows |")}
    assert sum(rules.values()) == 268
    assert rules["passenger_count_zero"] == 259
