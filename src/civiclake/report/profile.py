"""The generic page for any table (every Socrata dataset): rows over time on its first
timestamp column, null rate per column, top values of low-cardinality text columns, numeric
summaries. Each is one SQL aggregate over the table, whatever its size."""

from __future__ import annotations

from decimal import Decimal

from civiclake.report import charts
from civiclake.report._source import DATA_VIEW, Source, quote
from civiclake.report.page import Section, TableBlock

LOW_CARDINALITY = 30  # distinct values up to which a text column gets a top-values chart
TOP_VALUES = 10
TOP_VALUE_COLUMNS = 6
BARS_UP_TO = 60  # periods: more are drawn as a line
DAILY_UP_TO_DAYS = 400  # longer spans are counted per month: a decade of days is unreadable
NUMERIC_PREFIXES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE")
NUMERIC_PREFIXES += ("DECIMAL", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "REAL")


def rows_over_time(source: Source) -> Section:
    out = Section("Rows over time")
    column = source.time_column
    if column is None:
        out.notes.append("no date or timestamp column: rows over time cannot be shown")
        return out
    span = source.one(
        f"SELECT date_diff('day', min({quote(column)})::DATE, max({quote(column)})::DATE) "
        f"FROM {DATA_VIEW}"
    )
    unit = "day" if span is None or span <= DAILY_UP_TO_DAYS else "month"
    records = source.rows(
        f"SELECT date_trunc('{unit}', {quote(column)})::DATE AS {unit}, count(*) AS rows "
        f"FROM {DATA_VIEW} WHERE {quote(column)} IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
    out.items.append(
        charts.make(
            "rows_over_time",
            f"Rows per {unit} ({column})",
            records,
            charts.bars(unit, "rows", x_type="T")
            if len(records) < BARS_UP_TO
            else charts.line(unit, "rows", y_axis=charts.COUNT_AXIS),
        )
    )
    return out


def _numeric(kind: str) -> bool:
    return kind.upper().startswith(NUMERIC_PREFIXES)


def columns_section(source: Source) -> Section:
    out = Section("Columns")
    cols = list(source.columns)
    counts = ", ".join(f"count({quote(c)}) AS {quote(c)}" for c in cols)
    row = source.rows(f"SELECT count(*) AS __rows, {counts} FROM {DATA_VIEW}")[0]
    total = row.pop("__rows")
    nulls = [
        {"column": c, "null_rate": round(1 - row[c] / total, 4) if total else 0.0} for c in cols
    ]
    out.items.append(
        charts.make(
            "null_rate",
            "Share of NULL values per column",
            nulls if total else [],
            charts.bars(
                "column", "null_rate", horizontal=True, sort=None, y_title="NULL share", share=True
            ),
            note="" if total else "no rows",
        )
    )
    numeric = [c for c, t in source.columns.items() if _numeric(t)]
    if numeric and total:
        parts = " UNION ALL ".join(
            f"SELECT {i} AS i, '{c.replace(chr(39), chr(39) * 2)}' AS column, "
            # min and max exactly as stored (a decimal(38,9) or a bigint is no double)
            f"min({quote(c)})::VARCHAR AS min, quantile_cont({quote(c)}, 0.5)::DOUBLE AS median, "
            f"avg({quote(c)})::DOUBLE AS mean, max({quote(c)})::VARCHAR AS max, "
            f"count({quote(c)}) AS non_null FROM {DATA_VIEW}"
            for i, c in enumerate(numeric)
        )
        summary = source.rows(f"SELECT * EXCLUDE (i) FROM ({parts}) ORDER BY i")
        for r in summary:
            for k in ("min", "max"):
                r[k] = None if r[k] is None else Decimal(r[k])
            for k in ("median", "mean"):
                r[k] = None if r[k] is None else round(r[k], 4)
        out.items.append(TableBlock("numeric_summary", "Numeric columns", summary))
    text = [c for c, t in source.columns.items() if t.upper() == "VARCHAR"]
    if text and total:
        distinct = source.rows(
            "SELECT "
            + ", ".join(f"approx_count_distinct({quote(c)}) AS {quote(c)}" for c in text)
            + f" FROM {DATA_VIEW}"
        )[0]
        low = [c for c in text if 0 < distinct[c] <= LOW_CARDINALITY][:TOP_VALUE_COLUMNS]
        for c in low:
            records = source.rows(
                f"SELECT coalesce({quote(c)}, '(null)') AS value, count(*) AS rows "
                f"FROM {DATA_VIEW} GROUP BY 1 ORDER BY rows DESC, value LIMIT {TOP_VALUES}"
            )
            out.items.append(
                charts.make(
                    f"top_values:{c}",
                    f"Top values of {c}",
                    records,
                    charts.bars("value", "rows", horizontal=True, sort="-x"),
                )
            )
    return out


def sections(source: Source) -> list[Section]:
    return [rows_over_time(source), columns_section(source)]
