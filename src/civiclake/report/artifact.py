"""The key figures of what a flow run just loaded, as markdown for its Prefect summary artifact.

Prefect 3.8's UI renders an artifact's markdown with tables and images, including
``data:image/svg+xml;base64`` images (checked in Chromium: the chart shows, nothing is
fetched), so the chart is inline like on the report pages. The figures are SQL aggregates over
the table's loaded range only. They are extras: any failure becomes a line in the artifact,
never a failed run.
"""

from __future__ import annotations

import base64
import logging
from datetime import date, datetime
from typing import Any

from civiclake.config import Settings

logger = logging.getLogger(__name__)
MAX_DAY_ROWS = 62  # more days than that: the table shows months
CHART_WIDTH = 520
CHART_HEIGHT = 160


def _image(records: list[dict[str, Any]], x: str, y: str, alt_text: str) -> str:
    svg = _render(_bar_spec(records, x, y))
    data = base64.b64encode(svg.encode()).decode("ascii")
    return f"![{alt_text}](data:image/svg+xml;base64,{data})"


# The page charts' font (``charts.FONT``), repeated: importing ``charts`` imports altair.
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.4.1.json"


def _bar_spec(records: list[dict[str, Any]], x: str, y: str) -> dict[str, Any]:
    """The Vega-Lite spec altair made for this chart (``charts.render``'s configuration: the
    page font, no view stroke), written out: importing altair took 0.45-0.75 s of every B&T and
    TLC run (the same SVG; ``tests/report/test_artifact.py`` compares them)."""
    return {
        "config": {
            "view": {"continuousWidth": 300, "continuousHeight": 300, "stroke": None},
            "font": FONT,
        },
        "data": {"values": [{k: _vega_value(v) for k, v in r.items()} for r in records]},
        # one labelled bar per day or month (a time axis would add hour ticks to 2 days)
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": x, "title": None, "type": "ordinal"},
            "y": {"field": y, "title": y, "type": "quantitative"},
        },
        "height": CHART_HEIGHT,
        "width": CHART_WIDTH,
        "$schema": SCHEMA,
    }


def _vega_value(value: Any) -> Any:
    """A record's value as altair passes it to Vega-Lite (a date becomes a DateTime object)."""
    if isinstance(value, datetime):
        return {
            "year": value.year,
            "month": value.month,
            "date": value.day,
            "hours": value.hour,
            "minutes": value.minute,
            "seconds": value.second,
            "milliseconds": value.microsecond // 1000,
            **({"utc": True} if value.tzinfo is not None else {}),
        }
    if isinstance(value, date):
        return {"year": value.year, "month": value.month, "date": value.day}
    return value


def _render(spec: dict[str, Any]) -> str:
    import vl_convert

    return str(vl_convert.vegalite_to_svg(spec))


def warm() -> None:
    """Start the chart renderer (vl-convert's JavaScript runtime: 0.5-0.8 s on its first chart)
    ahead of the artifact. It runs without the GIL, so a thread can do it while a run fetches."""
    _render(_bar_spec([{"day": date(2020, 1, 1), "rows": 1}], "day", "rows"))


def _md_table(records: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in records]
    return "\n".join(lines)


def _per_period(
    settings: Settings,
    table: str,
    column: str,
    start: datetime | date,
    stop: datetime | date,
    extra: str = "",
) -> list[dict[str, Any]]:
    """Rows per day of ``column`` in ``[start, stop)`` (per month when that is many days)."""
    from civiclake.report._source import open_source, quote, sql_literal

    source = open_source(settings, _catalog(settings), table, time_column=column)
    try:
        col = quote(column)
        where = (
            f"{col} >= {sql_literal(start.isoformat())}::TIMESTAMP "
            f"AND {col} < {sql_literal(stop.isoformat())}::TIMESTAMP"
        )
        unit = "day" if (stop - start).days <= MAX_DAY_ROWS else "month"
        return source.rows(
            f"SELECT date_trunc('{unit}', {col})::DATE AS {unit}, count(*) AS rows{extra} "
            f"FROM t WHERE {where} GROUP BY 1 ORDER BY 1"
        )
    finally:
        source.close()


def _catalog(settings: Settings) -> Any:
    from civiclake import tables

    return tables.load_catalog(settings)


def _safely(build: Any, *args: Any) -> str:
    try:
        return build(*args)
    except Exception as exc:  # figures are an extra: the load itself already committed
        logger.warning("load figures unavailable: %s", exc)
        return f"\n\n_load figures unavailable: {' '.join(str(exc).split())}_\n"


def bnt_figures(settings: Settings, start: date, stop: date, run_id: str) -> str:
    """Rows and vehicles per day of the loaded range, and this run's rejects by reason."""
    return _safely(_bnt_figures, settings, start, stop, run_id)


def _bnt_figures(settings: Settings, start: date, stop: date, run_id: str) -> str:
    from civiclake.sources import bnt_fetch

    extra = ", sum(coalesce(vehicles_e_zpass, 0) + coalesce(vehicles_vtoll, 0)) AS vehicles"
    per_day = _per_period(settings, bnt_fetch.TABLE, "date", start, stop, extra)
    period = next(iter(per_day[0])) if per_day else "day"
    parts = ["\n\n### What this run loaded\n"]
    if per_day:
        parts.append(_image(per_day, period, "vehicles", f"vehicles per {period}"))
        parts.append("\n\n" + _md_table(per_day, [period, "rows", "vehicles"]))
    else:
        parts.append("no rows in the loaded range")
    parts.append("\n\n### Rejected rows by reason\n\n" + _bnt_rejects(settings, run_id))
    return "".join(parts) + "\n"


def _bnt_rejects(settings: Settings, run_id: str) -> str:
    from civiclake.report._source import open_source
    from civiclake.sources import bnt_fetch

    catalog = _catalog(settings)
    if not catalog.table_exists(bnt_fetch.REJECTS_TABLE):
        return "none"
    source = open_source(settings, catalog, bnt_fetch.REJECTS_TABLE)
    try:
        rows = source.rows(
            "SELECT reason, count(*) AS rows FROM t WHERE load_run_id = ? "
            "GROUP BY 1 ORDER BY rows DESC, reason",
            [run_id],
        )
    finally:
        source.close()
    return _md_table(rows, ["reason", "rows"]) if rows else "none"


def tlc_figures(settings: Settings, summary: dict[str, Any]) -> str:
    """Trips per day of each loaded month, and rejects by rule per month."""
    return _safely(_tlc_figures, settings, summary)


def _tlc_figures(settings: Settings, summary: dict[str, Any]) -> str:
    from civiclake.sources import tlc

    spec = tlc.spec_for(summary["color"])
    loaded = [r for r in summary["months"] if r["status"] == "loaded"]
    if not loaded:
        return "\n\n_no month loaded_\n"
    per_day: list[dict[str, Any]] = []
    for r in loaded:
        year, month = map(int, r["month"].split("-"))
        the_month = tlc.Month(year, month)
        per_day += _per_period(settings, spec.table, spec.pickup, the_month.start, the_month.stop)
    rules = [
        {"month": r["month"], "rule": rule, "rows": n}
        for r in loaded
        for rule, n in r["rejected_by_rule"].items()
    ]
    parts = [
        "\n\n### What this run loaded\n",
        _image(per_day, "day", "rows", "trips per day") if per_day else "no rows",
        "\n\n### Rejected rows by rule\n\n" + _md_table(rules, ["month", "rule", "rows"]),
    ]
    if len(per_day) <= MAX_DAY_ROWS:
        parts.append("\n\n#### Trips per day\n\n" + _md_table(per_day, ["day", "rows"]))
    return "".join(parts) + "\n"
