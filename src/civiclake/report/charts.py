"""Charts: Vega-Lite specs built with altair, rendered to inline SVG by vl-convert (no browser,
no network: vl-convert embeds the Vega runtime and draws text with the machine's fonts, so a
page needs no script, CDN or web font). Each chart keeps the records it was drawn from, so
tests can check the numbers against independent SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import altair as alt

WIDTH = 720
HEIGHT = 260
BAND = 20  # px per category of a horizontal bar chart
# Vega's default Roboto/Helvetica stack: every system has a fallback, nothing is fetched.
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
# counts: whole numbers with thousands separators, never a tick at 0.5
COUNT_AXIS = alt.Axis(format=",d", tickMinStep=1)
# shares (0..1): percent labels over the whole 0-100 % range, never stretched over 0.828-0.836
SHARE_AXIS = alt.Axis(format=".0%")
SHARE_SCALE = alt.Scale(domain=[0, 1])


@dataclass
class Chart:
    """One chart of a page: the data behind it and its SVG."""

    key: str
    title: str
    records: list[dict[str, Any]]
    svg: str = ""
    note: str = ""


def render(chart: alt.TopLevelMixin) -> str:
    """SVG of an altair chart, drawn in-process by vl-convert.

    No schema validation by altair: it checks every inline data row with jsonschema (measured:
    13 s and +460 MB for a 52k-point chart); vl-convert rejects a bad spec anyway.
    """
    return render_spec(
        chart.configure(font=FONT).configure_view(stroke=None).to_dict(validate=False)
    )


def render_spec(spec: dict[str, Any]) -> str:
    """SVG of a Vega-Lite spec (a dict), drawn in-process by vl-convert."""
    import vl_convert

    return str(vl_convert.vegalite_to_svg(spec))


def _base(records: list[dict[str, Any]]) -> alt.Chart:
    # the page's heading names the chart: no title inside the SVG
    return alt.Chart(alt.Data(values=records)).properties(width=WIDTH, height=HEIGHT)


def make(
    key: str,
    title: str,
    records: list[dict[str, Any]],
    build: Any,
    note: str = "",
) -> Chart:
    """A ``Chart`` of ``records``; ``build(alt.Chart) -> alt.Chart`` adds marks and encodings.

    Empty data gives a chart with a note and no SVG (the page says so instead of drawing axes).
    """
    if not records:
        return Chart(key, title, records, note=note or "no data")
    chart = build(_base(records))
    return Chart(key, title, records, svg=render(chart), note=note)


def line(
    x: str,
    y: str,
    color: str | None = None,
    x_type: str = "T",
    y_title: str = "",
    y_axis: alt.Axis | None = None,
) -> Any:
    def build(base: alt.Chart) -> alt.Chart:
        enc: dict[str, Any] = {
            "x": alt.X(f"{x}:{x_type}", title=None),
            "y": alt.Y(f"{y}:Q", title=y_title or y, axis=y_axis),
            "tooltip": [f"{x}:{x_type}", f"{y}:Q"],
        }
        if color:
            enc["color"] = alt.Color(f"{color}:N", title=None)
            enc["tooltip"].append(f"{color}:N")
        return base.mark_line(point=False).encode(**enc)

    return build


def bars(
    x: str,
    y: str,
    color: str | None = None,
    x_type: str = "N",
    horizontal: bool = False,
    sort: Any = None,
    y_title: str = "",
    offset: bool = False,
    stack: Any = True,
    share: bool = False,
) -> Any:
    """Bars of a count (whole-number ticks) or, with ``share``, of a 0..1 share (0-100 %)."""

    def build(base: alt.Chart) -> alt.Chart:
        axis = SHARE_AXIS if share else COUNT_AXIS
        scale = SHARE_SCALE if share else alt.Undefined
        cat = alt.X(f"{x}:{x_type}", title=None, sort=sort)
        val = alt.Y(f"{y}:Q", title=y_title or y, stack=stack, axis=axis, scale=scale)
        if horizontal:
            cat = alt.Y(f"{x}:{x_type}", title=None, sort=sort)
            val = alt.X(f"{y}:Q", title=y_title or y, stack=stack, axis=axis, scale=scale)
        enc: dict[str, Any] = {"x": val, "y": cat} if horizontal else {"x": cat, "y": val}
        if color:
            enc["color"] = alt.Color(f"{color}:N", title=None)
            if offset:
                enc["yOffset" if horizontal else "xOffset"] = alt.XOffset(f"{color}:N")
        enc["tooltip"] = [f"{x}:{x_type}", f"{y}:Q", *([f"{color}:N"] if color else [])]
        chart = base.mark_bar().encode(**enc)
        # one band per category, however many there are: a single bar is not 260 px tall
        return chart.properties(height=alt.Step(BAND)) if horizontal else chart

    return build


def histogram(low: str, high: str, y: str, x_title: str, x_unit: str = "") -> Any:
    """Counts per bin; ``x_unit`` ("%") is appended to the x labels (values already in it)."""

    def build(base: alt.Chart) -> alt.Chart:
        axis = alt.Axis(labelExpr=f"format(datum.value, ',') + '{x_unit}'") if x_unit else None
        return base.mark_bar().encode(
            x=alt.X(f"{low}:Q", title=x_title, bin="binned", axis=axis),
            x2=f"{high}:Q",
            y=alt.Y(f"{y}:Q", title=y, axis=COUNT_AXIS),
            tooltip=[f"{low}:Q", f"{high}:Q", f"{y}:Q"],
        )

    return build


def heatmap(
    x: str,
    y: str,
    value: str,
    x_type: str = "O",
    y_type: str = "O",
    y_sort: Any = None,
    share: bool = False,
) -> Any:
    """Cells coloured from zero (a count) or over 0-100 % (``share``): a colour scale spread
    over the data's own narrow range makes a 1 % difference look like night and day."""

    def build(base: alt.Chart) -> alt.Chart:
        if share:
            scale, legend = SHARE_SCALE, alt.Legend(format=".0%")
        else:
            scale, legend = alt.Scale(zero=True), alt.Legend(format=",d")
        return base.mark_rect().encode(
            x=alt.X(f"{x}:{x_type}", title=x),
            y=alt.Y(f"{y}:{y_type}", title=y, sort=y_sort),
            color=alt.Color(f"{value}:Q", title=value, scale=scale, legend=legend),
            tooltip=[f"{x}:{x_type}", f"{y}:{y_type}", f"{value}:Q"],
        )

    return build


CHANGE_COLORS = {
    "added": "#2f8f4e",
    "removed": "#c0392b",
    "added (rolled back)": "#b7d9c2",
    "removed (rolled back)": "#ecc0bb",
}


def snapshot_flows(time: str, y: str, change: str) -> Any:
    """Bars of rows added (up) and removed (down) at each snapshot's commit time (UTC),
    rolled-back snapshots in pale colours; whole-number ticks."""

    def build(base: alt.Chart) -> alt.Chart:
        present = {r[change] for r in base.data.values}  # type: ignore[union-attr]
        domain = [c for c in CHANGE_COLORS if c in present]
        return base.mark_bar(width=6).encode(
            # commits are seconds apart in a test, months in a lake: no ".500" ms ticks
            x=alt.X(
                f"{time}:T",
                title="committed (UTC)",
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(tickMinStep=1000),
            ),
            y=alt.Y(f"{y}:Q", title="rows", axis=COUNT_AXIS),
            color=alt.Color(
                f"{change}:N",
                title=None,
                scale=alt.Scale(domain=domain, range=[CHANGE_COLORS[c] for c in domain]),
            ),
            tooltip=[f"{time}:T", f"{y}:Q", f"{change}:N", "snapshot_id:N", "run_id:N"],
        )

    return build
