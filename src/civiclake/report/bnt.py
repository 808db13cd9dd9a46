"""The page of ``mta.bnt_traffic_hourly``: daily vehicles per facility, the weekday x hour
profile, E-ZPass share per facility and month, year-over-year change, inbound vs outbound."""

from __future__ import annotations

from civiclake.report import charts
from civiclake.report._source import DATA_VIEW, Source
from civiclake.report.page import Section

TABLE = "mta.bnt_traffic_hourly"
TIME_COLUMN = "date"
VEHICLES = "(coalesce(vehicles_e_zpass, 0) + coalesce(vehicles_vtoll, 0))"
DAILY_UP_TO_DAYS = 400
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def sections(source: Source) -> list[Section]:
    t = DATA_VIEW
    traffic = Section("Traffic")
    span = source.one(f"SELECT date_diff('day', min(date), max(date)) FROM {t}") or 0
    # years of days are 50k+ points per chart: beyond DAILY_UP_TO_DAYS, average per month
    period = "date" if span <= DAILY_UP_TO_DAYS else "date_trunc('month', date)::DATE"
    traffic.items.append(
        charts.make(
            "daily_vehicles",
            "Vehicles per day by facility"
            + ("" if span <= DAILY_UP_TO_DAYS else " (average per day of each month)"),
            source.rows(
                f"""
                SELECT {period} AS date, facility, sum({VEHICLES}) AS vehicles,
                       count(DISTINCT date) AS days,
                       round(sum({VEHICLES}) / count(DISTINCT date), 1) AS vehicles_per_day
                FROM {t} GROUP BY ALL ORDER BY date, facility
                """
            ),
            charts.line(
                "date",
                "vehicles_per_day",
                color="facility",
                y_title="vehicles per day",
                y_axis=charts.COUNT_AXIS,
            ),
        )
    )
    # total vehicles of each (date, hour), averaged over the dates falling on each weekday
    weekday_case = " ".join(f"WHEN {i + 1} THEN '{d}'" for i, d in enumerate(WEEKDAYS))
    traffic.items.append(
        charts.make(
            "weekday_hour",
            "Average vehicles per hour, by weekday (all facilities)",
            source.rows(
                f"""
                WITH per_hour AS (
                    SELECT date, hour, sum({VEHICLES}) AS vehicles FROM {t} GROUP BY ALL
                )
                SELECT isodow(date) AS weekday_number,
                       CASE isodow(date) {weekday_case} END AS weekday, hour,
                       round(avg(vehicles), 1) AS avg_vehicles, count(*) AS days
                FROM per_hour GROUP BY ALL ORDER BY weekday_number, hour
                """
            ),
            charts.heatmap("hour", "weekday", "avg_vehicles", y_sort=list(WEEKDAYS)),
        )
    )
    payment = Section("E-ZPass and tolls by mail")
    payment.items.append(
        charts.make(
            "ezpass_share",
            "E-ZPass share of vehicles, by facility and month",
            source.rows(
                f"""
                SELECT strftime(date_trunc('month', date), '%Y-%m') AS month, facility,
                       sum(vehicles_e_zpass) AS e_zpass, sum(vehicles_vtoll) AS vtoll,
                       round(sum(vehicles_e_zpass) / nullif(sum({VEHICLES}), 0), 4)
                           AS e_zpass_share
                FROM {t} GROUP BY ALL ORDER BY month, facility
                """
            ),
            charts.heatmap("month", "facility", "e_zpass_share", share=True),
        )
    )
    trend = Section("Year over year")
    yoy = source.rows(
        f"""
        WITH monthly AS (
            SELECT facility, date_trunc('month', date)::DATE AS month,
                   sum({VEHICLES}) AS vehicles, count(DISTINCT date) AS days
            FROM {t} GROUP BY ALL
        )
        SELECT strftime(cur.month, '%Y-%m') AS month, cur.facility,
               cur.vehicles, prev.vehicles AS vehicles_year_before,
               round(100.0 * (cur.vehicles - prev.vehicles) / nullif(prev.vehicles, 0), 2)
                   AS change_pct
        FROM monthly cur JOIN monthly prev
          ON prev.facility = cur.facility AND prev.month = cur.month - INTERVAL 1 YEAR
         AND prev.days = cur.days
        ORDER BY month, facility
        """
    )
    trend.items.append(
        charts.make(
            "yoy_change",
            "Change vs the same month a year before (%), by facility",
            yoy,
            charts.line("month", "change_pct", color="facility", y_title="change %"),
            note="" if yoy else "needs a year of history (the same month a year before)",
        )
    )
    direction = Section("Inbound vs outbound")
    direction.items.append(
        charts.make(
            "direction",
            "Vehicles by direction and facility",
            source.rows(
                f"""
                SELECT facility,
                       CASE direction WHEN 'I' THEN 'inbound' WHEN 'O' THEN 'outbound'
                            ELSE coalesce(direction, '(none)') END AS direction,
                       sum({VEHICLES}) AS vehicles
                FROM {t} GROUP BY ALL ORDER BY facility, direction
                """
            ),
            charts.bars("facility", "vehicles", color="direction", horizontal=True, offset=True),
        )
    )
    return [traffic, payment, trend, direction]
