"""The numbers behind every chart, checked against independent SQL over the same tables
(``civiclake.query.run_sql``, the engine of ``civiclake sql``) or the rows themselves."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date

import duckdb
import pyarrow.compute as pc
import pytest
from report_support import (
    EMPTY_TABLE,
    NO_TIME_TABLE,
    ONE_ROW_TABLE,
    PERMITS_ROWS,
    PERMITS_TABLE,
    REVISED_CHANGED,
    REVISED_ROWS,
    REVISED_TABLE,
    REVISED_UNDONE,
    SOCRATA_ROWS,
    SOCRATA_TABLE,
    Lake,
)

from civiclake import tables
from civiclake.config import get_settings
from civiclake.query import run_sql
from civiclake.report import Page, build_page
from civiclake.report.html import page_html

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def page(identifier: str, since: date | None = None, date_column: str | None = None) -> Page:
    settings = get_settings()
    return build_page(settings, tables.load_catalog(settings), identifier, since, date_column)


def duck(identifier: str, query: str) -> list[dict]:
    """``query`` over ``t``: the table as PyIceberg scans it, in a fresh DuckDB (nothing of the
    report's own views or SQL)."""
    arrow = tables.load_catalog(get_settings()).load_table(identifier).scan().to_arrow()
    con = duckdb.connect()
    con.register("t", arrow)
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def svg_labels(svg: str) -> list[str]:
    return re.findall(r">([^<>]+)</text>", svg)


def per_period(records: list[dict], unit: str) -> dict[str, int]:
    return {r[unit]: r["rows"] for r in records}


def sql(query: str) -> list[dict]:
    return run_sql(query, get_settings()).to_pylist()


def scalar(query: str) -> object:
    (row,) = sql(query)
    return next(iter(row.values()))


def test_bnt_page(at_lake: Lake) -> None:
    p = page("mta.bnt_traffic_hourly")
    assert p.kind == "bnt"
    assert p.rows == scalar("SELECT count(*) FROM mta.bnt_traffic_hourly") == 6_720
    charts = p.charts
    assert all(c.svg.startswith("<svg") for k, c in charts.items() if k != "yoy_change")

    per_facility: dict[str, int] = defaultdict(int)
    for r in charts["daily_vehicles"].records:
        per_facility[r["facility"]] += r["vehicles"]
    expected = sql(
        "SELECT facility, sum(vehicles_e_zpass) + sum(vehicles_vtoll) AS v "
        "FROM mta.bnt_traffic_hourly GROUP BY facility"
    )
    assert per_facility == {r["facility"]: int(r["v"]) for r in expected}
    days = {r["date"] for r in charts["daily_vehicles"].records}
    assert len(days) == scalar("SELECT count(DISTINCT date) FROM mta.bnt_traffic_hourly") == 14

    cells = charts["weekday_hour"].records
    assert len(cells) == 7 * 24
    (tuesday_8,) = [c for c in cells if c["weekday"] == "Tue" and c["hour"] == 8]
    tuesdays = sql(
        "SELECT date, sum(vehicles_e_zpass + vehicles_vtoll) AS v FROM mta.bnt_traffic_hourly "
        "WHERE dayofweek(date) = 2 AND hour = 8 GROUP BY date"
    )
    assert tuesday_8["days"] == len(tuesdays) == 2
    assert tuesday_8["avg_vehicles"] == pytest.approx(
        sum(int(t["v"]) for t in tuesdays) / 2, abs=0.05
    )

    share = {(r["facility"], r["month"]): r for r in charts["ezpass_share"].records}
    for r in sql(
        "SELECT facility, sum(vehicles_e_zpass) AS e, sum(vehicles_vtoll) AS v "
        "FROM mta.bnt_traffic_hourly GROUP BY facility"
    ):
        got = share[(r["facility"], "2024-03")]
        assert (got["e_zpass"], got["vtoll"]) == (int(r["e"]), int(r["v"]))
        e, v = int(r["e"]), int(r["v"])
        assert got["e_zpass_share"] == pytest.approx(e / (e + v), abs=1e-4)

    directions: Counter[str] = Counter()
    for r in charts["direction"].records:
        directions[r["direction"]] += r["vehicles"]
    for d, name in (("I", "inbound"), ("O", "outbound")):
        assert directions[name] == int(
            scalar(
                "SELECT sum(vehicles_e_zpass + vehicles_vtoll) FROM mta.bnt_traffic_hourly "
                f"WHERE direction = '{d}'"
            )
        )
    # two weeks of history: no year-over-year figure, and the page says why
    assert charts["yoy_change"].records == []
    assert "a year of history" in charts["yoy_change"].note


def test_data_quality_section(at_lake: Lake) -> None:
    p = page("mta.bnt_traffic_hourly")
    rejects = p.charts["rejects_by_reason"].records
    expected = sql(
        "SELECT reason, count(*) AS n FROM mta.bnt_traffic_hourly_rejects GROUP BY reason"
    )
    assert {r["reason"]: r["rows"] for r in rejects} == {r["reason"]: r["n"] for r in expected}
    assert sum(r["rows"] for r in rejects) == 4
    assert {r["load"] for r in rejects} == {"file:bnt_sample.csv"}

    table = tables.load_catalog(get_settings()).load_table("mta.bnt_traffic_hourly")
    current = table.current_snapshot()
    assert current is not None
    history = p.tables["snapshots"].records
    assert history[0]["snapshot_id"] == str(current.snapshot_id)  # newest first, id as text
    assert sum(h["rows_added"] - h["rows_removed"] for h in history) == p.rows
    assert history[0]["source"] == "file:bnt_sample.csv"
    assert history[0]["range"] == "2024-03-01/2024-03-15"
    last = {r["field"]: r["value"] for r in p.tables["last_load"].records}
    assert last["run_id"] == current.summary.additional_properties["civiclake.run-id"]
    # recorded counts are numbers like the others (thousands separators alike on the page)
    assert (last["rows-rejected"], last["rows-loaded"]) == (4, 6_720)
    flows = p.charts["rows_per_snapshot"].records
    assert sum(r["rows"] for r in flows) == p.rows


def test_tlc_page_on_the_real_green_month(at_lake: Lake) -> None:
    p = page("tlc.green_trips")
    assert p.kind == "tlc"
    rows = scalar("SELECT count(*) FROM tlc.green_trips")
    assert p.rows == rows > 90_000
    charts = p.charts
    per_day = charts["trips_per_day"].records
    assert sum(r["trips"] for r in per_day) == rows
    assert len(per_day) == 31  # rows outside October are rejects, not trips
    assert sum(r["trips"] for r in charts["trips_by_hour"].records) == rows
    assert {r["hour"] for r in charts["trips_by_hour"].records} == set(range(24))

    fares = charts["fare_distribution"].records
    assert sum(r["trips"] for r in fares) == scalar(
        "SELECT count(*) FROM tlc.green_trips WHERE fare_amount >= 0"
    )
    assert fares[-1]["bin_start"] == 100.0  # everything from 100 up lands in the last bar
    assert fares[-1]["trips"] == scalar(
        "SELECT count(*) FROM tlc.green_trips WHERE fare_amount >= 100"
    )
    # card payments only (cash tips are not recorded), in percent of the fare, as titled
    tip = charts["tip_share_distribution"]
    assert "percent" in tip.title and "card payments" in tip.title
    expected_tips = duck(
        "tlc.green_trips",
        "SELECT least(floor(100 * tip_amount / fare_amount / 2.5), 20) * 2.5 AS b, "
        "count(*) AS n FROM t WHERE payment_type = 1 AND fare_amount > 0 "
        "AND tip_amount >= 0 GROUP BY 1",
    )
    assert {r["bin_start"]: r["trips"] for r in tip.records} == {
        float(r["b"]): r["n"] for r in expected_tips
    }
    assert sum(r["trips"] for r in tip.records) < scalar(
        "SELECT count(*) FROM tlc.green_trips WHERE fare_amount > 0 AND tip_amount >= 0"
    )
    assert tip.records[-1]["bin_start"] == 50.0  # 50% and more
    labels = re.findall(r">(\d+%)</text>", tip.svg)
    assert "10%" in labels and "50%" in labels, labels
    distance = charts["distance_distribution"].records
    assert sum(r["trips"] for r in distance) == scalar(
        "SELECT count(*) FROM tlc.green_trips WHERE trip_distance >= 0"
    )

    zones = charts["top_pickup_zones"].records
    assert len(zones) == 15
    expected = sql(
        'SELECT "PULocationID" AS id, count(*) AS n FROM tlc.green_trips '
        "GROUP BY 1 ORDER BY n DESC, id LIMIT 3"
    )
    names = {
        r["locationid"]: f"{r['zone']} ({r['borough']})"
        for r in sql("SELECT * FROM tlc.taxi_zones")
    }
    assert len(names) == 265  # the real lookup, loaded by the taxi run
    assert [(z["location_id"], z["zone"], z["trips"]) for z in zones[:3]] == [
        (e["id"], names[e["id"]], e["n"]) for e in expected
    ]
    payments = charts["payment_types"].records
    assert sum(r["trips"] for r in payments) == rows
    cash = [r for r in payments if r["payment"] == "Cash"]
    assert cash[0]["trips"] == scalar("SELECT count(*) FROM tlc.green_trips WHERE payment_type = 2")

    rejects = {r["reason"]: r["rows"] for r in charts["rejects_by_reason"].records}
    assert rejects == {
        r["reject_reason"]: r["n"]
        for r in sql("SELECT reject_reason, count(*) AS n FROM tlc.green_trips_rejects GROUP BY 1")
    }


def test_generic_profile_of_a_socrata_table(at_lake: Lake) -> None:
    p = page(SOCRATA_TABLE)
    assert (p.kind, p.rows) == ("profile", SOCRATA_ROWS)
    charts = p.charts
    over_time = charts["rows_over_time"].records
    assert "month" in over_time[0]  # 875 days of data are counted per month
    assert sum(r["rows"] for r in over_time) == SOCRATA_ROWS
    # the dataset's own date, not the portal's socrata_created_at (one upload: one spike)
    assert charts["rows_over_time"].title == "Rows per month (created_date)"
    assert per_period(over_time, "month") == {
        r["m"].isoformat(): r["n"]
        for r in duck(
            SOCRATA_TABLE,
            "SELECT date_trunc('month', created_date)::DATE AS m, count(*) AS n FROM t GROUP BY 1",
        )
    }
    nulls = {r["column"]: r["null_rate"] for r in charts["null_rate"].records}
    assert nulls["borough"] == pytest.approx(300 / SOCRATA_ROWS, abs=1e-4)
    assert nulls["response_hours"] == pytest.approx(
        scalar(f"SELECT count(*) FILTER (response_hours IS NULL) FROM {SOCRATA_TABLE}")
        / SOCRATA_ROWS,
        abs=1e-4,
    )
    assert nulls["unique_key"] == 0
    agency = {r["value"]: r["rows"] for r in charts["top_values:agency"].records}
    assert agency == {"NYPD": 750, "DOT": 750, "DSNY": 750, "HPD": 750}
    assert "top_values:descriptor" not in charts  # 3,000 distinct values: not a category
    summary = {r["column"]: r for r in p.tables["numeric_summary"].records}
    table = tables.load_catalog(get_settings()).load_table(SOCRATA_TABLE).scan().to_arrow()
    hours = table.column("response_hours")
    assert summary["response_hours"]["max"] == pc.max(hours).as_py()
    assert summary["response_hours"]["non_null"] == len(hours) - hours.null_count
    assert summary["units"]["mean"] == pytest.approx(pc.mean(table.column("units")).as_py())


def test_since_limits_the_charts(at_lake: Lake) -> None:
    p = page("mta.bnt_traffic_hourly", since=date(2024, 3, 8))
    assert p.rows == scalar(
        "SELECT count(*) FROM mta.bnt_traffic_hourly WHERE date >= DATE '2024-03-08'"
    )
    assert min(r["date"] for r in p.charts["daily_vehicles"].records) == "2024-03-08"


@pytest.mark.parametrize(
    ("identifier", "says"),
    [
        (EMPTY_TABLE, "the table is empty"),
        (ONE_ROW_TABLE, "one row only"),
        (NO_TIME_TABLE, "no date or timestamp column"),
    ],
)
def test_edge_tables_get_a_page_that_says_so(at_lake: Lake, identifier: str, says: str) -> None:
    p = page(identifier)
    texts = [*p.notes, *(n for s in p.sections for n in s.notes)]
    assert any(says in t for t in texts), texts
    if identifier == EMPTY_TABLE:
        assert p.rows == 0
        assert p.tables["snapshots"].records == []
        assert p.tables["last_load"].note == "never loaded"
    if identifier == ONE_ROW_TABLE:
        assert p.charts["rows_over_time"].records == [{"day": "2024-05-01", "rows": 1}]
    if identifier == NO_TIME_TABLE:
        assert {r["value"]: r["rows"] for r in p.charts["top_values:code"].records} == {
            "a": 2,
            "b": 1,
            "(null)": 1,
        }


def test_the_partition_column_is_the_default_date(at_lake: Lake) -> None:
    """filed_date comes first, but the table is partitioned by month(issued_date)."""
    charts = page(PERMITS_TABLE).charts
    over_time = charts["rows_over_time"]
    assert over_time.title == "Rows per month (issued_date)"
    assert per_period(over_time.records, "month") == {
        r["m"].isoformat(): r["n"]
        for r in duck(
            PERMITS_TABLE,
            "SELECT date_trunc('month', issued_date)::DATE AS m, count(*) AS n FROM t GROUP BY 1",
        )
    }
    assert sum(r["rows"] for r in over_time.records) == PERMITS_ROWS


@pytest.mark.parametrize("column", ["filed_date", "socrata_created_at"])
def test_the_user_chooses_the_date_column(at_lake: Lake, column: str) -> None:
    p = page(PERMITS_TABLE, since=date(2024, 1, 1), date_column=column)
    over_time = p.charts["rows_over_time"]
    unit = "day" if column == "socrata_created_at" else "month"
    assert over_time.title == f"Rows per {unit} ({column})"
    # --since filters on the chosen column too
    expected = duck(
        PERMITS_TABLE,
        f"SELECT date_trunc('{unit}', {column})::DATE AS p, count(*) AS n FROM t "
        f"WHERE {column} >= DATE '2024-01-01' GROUP BY 1",
    )
    assert per_period(over_time.records, unit) == {r["p"].isoformat(): r["n"] for r in expected}
    assert p.rows == sum(r["n"] for r in expected)
    if column == "socrata_created_at":  # the one upload, as chosen
        assert len(over_time.records) == 1


def test_snapshot_history_counts_rows_not_rewritten_files(at_lake: Lake) -> None:
    """800 rows replaced in a 20,000-row file: the page says 800 in and 800 out, not 20,000."""
    p = page(REVISED_TABLE)
    table = tables.load_catalog(get_settings()).load_table(REVISED_TABLE)
    history = p.tables["snapshots"].records  # newest first
    assert len(history) == len(table.metadata.snapshots) == 5
    runs: dict[str, dict[str, int]] = defaultdict(Counter)
    for h in history:
        runs[h["run_id"]].update({k: h[k] for k in ("rows_added", "rows_removed")})
    assert runs["v1"] == {"rows_added": REVISED_ROWS, "rows_removed": 0}
    assert runs["v2"] == {"rows_added": REVISED_CHANGED, "rows_removed": REVISED_CHANGED}
    assert runs["v3"] == {"rows_added": REVISED_UNDONE, "rows_removed": REVISED_UNDONE}
    # the file copied unchanged is said, not counted
    assert {h["rows_rewritten"] for h in history if h["run_id"] == "v2"} == {
        0,
        REVISED_ROWS - REVISED_CHANGED,
    }
    # the row changes themselves, from the data: v1's rows against the current ones
    v1 = next(s for s in table.metadata.snapshots if s.parent_snapshot_id is None)
    con = duckdb.connect()
    con.register("before", table.scan(snapshot_id=v1.snapshot_id).to_arrow())
    con.register("now", table.scan().to_arrow())
    gone = con.execute("SELECT count(*) FROM (FROM before EXCEPT ALL FROM now)").fetchone()
    new = con.execute("SELECT count(*) FROM (FROM now EXCEPT ALL FROM before)").fetchone()
    assert (gone[0], new[0]) == (REVISED_CHANGED, REVISED_CHANGED)

    # the rollback is marked in the table and in the chart
    status = {h["snapshot_id"]: h["status"] for h in history}
    current = table.current_snapshot()
    assert current is not None and status[str(current.snapshot_id)] == "current"
    assert [h["status"] for h in history if h["run_id"] == "v3"] == ["rolled back"] * 2
    chart = p.charts["rows_per_snapshot"]
    flows = chart.records
    assert {r["change"] for r in flows if r["run_id"] == "v3"} == {
        "added (rolled back)",
        "removed (rolled back)",
    }
    assert {r["change"] for r in flows if r["run_id"] != "v3"} == {"added", "removed"}
    assert max(abs(r["rows"]) for r in flows if r["run_id"] != "v1") == REVISED_CHANGED
    live = sum(r["rows"] for r in flows if "rolled back" not in r["change"])
    assert live == p.rows == scalar(f"SELECT count(*) FROM {REVISED_TABLE}") == REVISED_ROWS
    assert "2 rolled back" in chart.note
    last = {r["field"]: r["value"] for r in p.tables["last_load"].records}
    assert (last["snapshot_id"], last["run_id"]) == (str(current.snapshot_id), "v2")
    # drawn on a time axis, whole numbers on the count axis
    assert "X-axis titled 'committed (UTC)' for a utc scale" in chart.svg
    labels = re.findall(r">([^<>]+)</text>", chart.svg)
    assert "20,000" in labels and "0" in labels
    # counts in whole numbers (".500" alone is a time tick: commits a test makes within a second)
    fractions = [t for t in labels if re.fullmatch(r"\D?[\d,]*\.\d+", t)]
    assert [t for t in fractions if not re.fullmatch(r"\.\d{3}", t)] == [], labels


NUMBER = re.compile(r"-?\d{1,3}(,\d{3})*(\.\d+)?")


def test_figures_are_exact_plain_and_separated_alike(at_lake: Lake) -> None:
    p = page(PERMITS_TABLE)
    summary = {r["column"]: r for r in p.tables["numeric_summary"].records}
    (expected,) = duck(
        PERMITS_TABLE,
        "SELECT min(valuation) AS vmin, max(valuation) AS vmax, min(fee) AS fmin, "
        "max(fee) AS fmax, median(fee) AS fmed, count(fee) AS n FROM t",
    )
    # min and max exactly as stored: a decimal(38,9) keeps its 19 digits
    assert (summary["valuation"]["min"], summary["valuation"]["max"]) == (
        expected["vmin"],
        expected["vmax"],
    )
    assert (summary["fee"]["min"], summary["fee"]["max"]) == (expected["fmin"], expected["fmax"])
    assert summary["fee"]["median"] == pytest.approx(expected["fmed"])
    html = page_html(p, "now")
    for figure in ("1,100,000,000.123456789", "1,100,000,399.123456789", "1,250,000.5"):
        assert f'<td class="num">{figure}</td>' in html
    assert f'<td class="num">{expected["n"]:,}</td>' in html
    text = re.sub(r"<svg.*?</svg>", "", html, flags=re.S)
    # run ids are UUIDs: "9a3e-6906" is not a number in scientific notation
    text = re.sub(r"\b[0-9a-f]{8}(?:-[0-9a-f]*)+", "<run id>", text)
    assert not re.findall(r"\d(?:\.\d+)?e[+-]\d", text)  # no 9e+05, 1.1e+09
    cells = re.findall(r'<td class="num">([^<]*)</td>', html)
    assert cells and [c for c in cells if not NUMBER.fullmatch(c)] == []
    for chart in p.charts.values():  # axis and legend labels: 20,000 never beside 20000
        assert [t for t in svg_labels(chart.svg) if re.fullmatch(r"\d{5,}", t)] == []
        assert not [t for t in svg_labels(chart.svg) if re.search(r"\de[+-]?\d", t)]


def test_colour_scales_and_share_axes_start_at_zero(at_lake: Lake) -> None:
    charts = page("mta.bnt_traffic_hourly").charts
    share = charts["ezpass_share"]
    values = [r["e_zpass_share"] for r in share.records]
    assert max(values) - min(values) < 0.2  # a narrow range, drawn on the whole 0-100 %
    labels = svg_labels(share.svg)
    assert "0%" in labels and "100%" in labels, labels
    heat = svg_labels(charts["weekday_hour"].svg)
    assert "0" in heat, heat  # the legend starts at zero vehicles
    nulls = svg_labels(page(SOCRATA_TABLE).charts["null_rate"].svg)
    assert "0%" in nulls and "100%" in nulls, nulls


# Every chart's records against a query written here, over the table as PyIceberg scans it
BNT = "mta.bnt_traffic_hourly"
BNT_VEHICLES = "coalesce(vehicles_e_zpass, 0) + coalesce(vehicles_vtoll, 0)"


def test_every_bnt_chart_equals_independent_sql(at_lake: Lake) -> None:
    charts = page(BNT).charts
    daily = {(r["date"], r["facility"]): r["vehicles"] for r in charts["daily_vehicles"].records}
    assert daily == {
        (r["date"].isoformat(), r["facility"]): r["v"]
        for r in duck(BNT, f"SELECT date, facility, sum({BNT_VEHICLES}) AS v FROM t GROUP BY ALL")
    }
    cells = {(r["weekday"], r["hour"]): r["avg_vehicles"] for r in charts["weekday_hour"].records}
    expected = duck(
        BNT,
        f"""SELECT strftime(date, '%a') AS wd, hour, avg(v) AS v FROM (
              SELECT date, hour, sum({BNT_VEHICLES}) AS v FROM t GROUP BY ALL
            ) GROUP BY ALL""",
    )
    assert len(cells) == len(expected) == 7 * 24
    for r in expected:
        assert cells[(r["wd"], r["hour"])] == pytest.approx(r["v"], abs=0.05)
    share = {(r["month"], r["facility"]): r for r in charts["ezpass_share"].records}
    expected = duck(
        BNT,
        "SELECT strftime(date, '%Y-%m') AS m, facility, sum(vehicles_e_zpass) AS e, "
        f"sum(vehicles_vtoll) AS v, sum({BNT_VEHICLES}) AS total FROM t GROUP BY ALL",
    )
    assert set(share) == {(r["m"], r["facility"]) for r in expected}
    for r in expected:
        got = share[(r["m"], r["facility"])]
        assert (got["e_zpass"], got["vtoll"]) == (r["e"], r["v"])
        assert got["e_zpass_share"] == pytest.approx(r["e"] / r["total"], abs=5e-5)
    direction = {
        (r["facility"], r["direction"]): r["vehicles"] for r in charts["direction"].records
    }
    assert direction == {
        (r["facility"], {"I": "inbound", "O": "outbound"}[r["direction"]]): r["v"]
        for r in duck(
            BNT, f"SELECT facility, direction, sum({BNT_VEHICLES}) AS v FROM t GROUP BY ALL"
        )
    }
    assert charts["yoy_change"].records == []  # two weeks: no month a year before


GREEN_TRIPS = "tlc.green_trips"


def _bins(expr: str, where: str, width: float, cap: float) -> dict[float, int]:
    rows = duck(
        GREEN_TRIPS,
        f"SELECT least(floor(({expr}) / {width}), {cap / width}) * {width} AS b, count(*) AS n "
        f"FROM t WHERE {where} AND ({expr}) >= 0 GROUP BY 1",
    )
    return {float(r["b"]): r["n"] for r in rows}


def test_every_tlc_chart_equals_independent_sql(at_lake: Lake) -> None:
    charts = page(GREEN_TRIPS).charts
    per_day = {r["day"]: r["trips"] for r in charts["trips_per_day"].records}
    assert per_day == {
        r["d"].isoformat(): r["n"]
        for r in duck(
            GREEN_TRIPS, "SELECT lpep_pickup_datetime::DATE AS d, count(*) AS n FROM t GROUP BY 1"
        )
    }
    by_hour = {r["hour"]: r["trips"] for r in charts["trips_by_hour"].records}
    assert by_hour == {
        r["h"]: r["n"]
        for r in duck(
            GREEN_TRIPS,
            "SELECT extract(hour FROM lpep_pickup_datetime) AS h, count(*) AS n FROM t GROUP BY 1",
        )
    }
    for key, expr, where, width, cap in (
        ("fare_distribution", "fare_amount", "fare_amount IS NOT NULL", 2.5, 100.0),
        ("distance_distribution", "trip_distance", "trip_distance IS NOT NULL", 0.5, 30.0),
        (
            "tip_share_distribution",
            "100.0 * tip_amount / fare_amount",
            "payment_type = 1 AND fare_amount > 0",
            2.5,
            50.0,
        ),
    ):
        got = {r["bin_start"]: r["trips"] for r in charts[key].records}
        assert got == _bins(expr, where, width, cap), key
    zones = [(z["location_id"], z["trips"]) for z in charts["top_pickup_zones"].records]
    expected = duck(
        GREEN_TRIPS,
        'SELECT "PULocationID" AS id, count(*) AS n FROM t GROUP BY 1 ORDER BY n DESC, id LIMIT 15',
    )
    assert zones == [(r["id"], r["n"]) for r in expected]
    payments = {r["payment_type"]: r["trips"] for r in charts["payment_types"].records}
    assert payments == {
        r["p"]: r["n"]
        for r in duck(GREEN_TRIPS, "SELECT payment_type AS p, count(*) AS n FROM t GROUP BY 1")
    }


def test_every_profile_chart_equals_independent_sql(at_lake: Lake) -> None:
    p = page(SOCRATA_TABLE)
    charts = p.charts
    columns = duck(SOCRATA_TABLE, "DESCRIBE t")
    nulls = {r["column"]: r["null_rate"] for r in charts["null_rate"].records}
    assert list(nulls) == [c["column_name"] for c in columns]
    for c in columns:
        name = c["column_name"]
        (row,) = duck(SOCRATA_TABLE, f"SELECT avg(({name} IS NULL)::INT) AS rate FROM t")
        assert nulls[name] == pytest.approx(row["rate"], abs=5e-5), name
    tops = {k.split(":", 1)[1]: v for k, v in charts.items() if k.startswith("top_values:")}
    assert set(tops) == {"agency", "borough"}  # text columns with at most 30 distinct values
    for name, chart in tops.items():
        assert [(r["value"], r["rows"]) for r in chart.records] == [
            (r["v"], r["n"])
            for r in duck(
                SOCRATA_TABLE,
                f"SELECT coalesce({name}, '(null)') AS v, count(*) AS n FROM t "
                "GROUP BY 1 ORDER BY n DESC, v LIMIT 10",
            )
        ]
    summary = {r["column"]: r for r in p.tables["numeric_summary"].records}
    for name in ("response_hours", "units"):
        (row,) = duck(
            SOCRATA_TABLE,
            f"SELECT min({name}) AS min, max({name}) AS max, median({name}) AS median, "
            f"avg({name}) AS mean, count({name}) AS non_null FROM t",
        )
        got = summary[name]
        assert (got["min"], got["max"], got["non_null"]) == (
            row["min"],
            row["max"],
            row["non_null"],
        )
        assert (got["median"], got["mean"]) == (
            pytest.approx(row["median"], abs=5e-5),
            pytest.approx(row["mean"], abs=5e-5),
        )


def test_rejects_chart_equals_independent_sql(at_lake: Lake) -> None:
    rejects = page(GREEN_TRIPS).charts["rejects_by_reason"].records
    expected = duck(
        GREEN_TRIPS + "_rejects",
        "SELECT reject_reason AS r, count(*) AS n FROM t GROUP BY 1",
    )
    got: Counter[str] = Counter()
    for r in rejects:
        got[r["reason"]] += r["rows"]
    assert got == {r["r"]: r["n"] for r in expected}


def test_a_tlc_page_by_another_date_column(at_lake: Lake) -> None:
    charts = page(GREEN_TRIPS, date_column="lpep_dropoff_datetime").charts
    assert charts["trips_by_hour"].title == "Trips by hour of day (lpep_dropoff_datetime)"
    per_day = {r["day"]: r["trips"] for r in charts["trips_per_day"].records}
    assert per_day == {
        r["d"].isoformat(): r["n"]
        for r in duck(
            GREEN_TRIPS, "SELECT lpep_dropoff_datetime::DATE AS d, count(*) AS n FROM t GROUP BY 1"
        )
    }
