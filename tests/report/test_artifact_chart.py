"""The summary artifact's chart is drawn without altair (issue 19's speed: importing altair cost
every B&T and TLC run 0.45-0.75 s), and is the chart altair described, to the byte."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from typing import Any

import pytest

from civiclake.cli._runs import warm_charts
from civiclake.report import artifact, charts


def altair_spec(records: list[dict[str, Any]], x: str, y: str) -> dict[str, Any]:
    """The spec the artifact built with altair before (``charts.render``'s configuration)."""
    import altair as alt

    chart = (
        alt.Chart(alt.Data(values=records))
        .mark_bar()
        .encode(x=alt.X(f"{x}:O", title=None), y=alt.Y(f"{y}:Q", title=y))
        .properties(width=artifact.CHART_WIDTH, height=artifact.CHART_HEIGHT)
    )
    return chart.configure(font=charts.FONT).configure_view(stroke=None).to_dict(validate=False)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "first",
    [date(2024, 1, 1), datetime(2024, 1, 1, 5, 6, 7, 8000), datetime(2024, 1, 1, 5, tzinfo=UTC)],
)
def test_the_chart_is_the_one_altair_made(first: date) -> None:
    records = [
        {"day": first, "rows": 480, "vehicles": 12_345},
        {"day": "2024-01-02", "rows": 470, "vehicles": 11_111},
    ]
    spec = artifact._bar_spec(records, "day", "vehicles")
    assert spec == altair_spec(records, "day", "vehicles")
    assert spec["config"]["font"] == charts.FONT
    svg = artifact._render(spec)
    assert svg.startswith("<svg") and svg == charts.render_spec(
        altair_spec(records, "day", "vehicles")
    )


def test_the_artifact_and_its_warm_up_import_no_altair() -> None:
    code = (
        "import sys\n"
        "from civiclake.cli._runs import warm_charts\n"
        "from civiclake.report import artifact\n"
        "warm_charts().join()\n"
        "image = artifact._image([{'day': 'x', 'rows': 1}], 'day', 'rows', 'rows per day')\n"
        "assert image.startswith('![rows per day](data:image/svg+xml;base64,'), image[:80]\n"
        "print('altair' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


def test_warm_charts_ends() -> None:
    thread = warm_charts()
    thread.join(timeout=60)
    assert not thread.is_alive()
