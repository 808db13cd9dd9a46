"""The page of ``tlc.{color}_trips``: trips per day and by hour of day; fare, tip share and
distance distributions; top pickup zones by name (``tlc.taxi_zones``); the payment type mix.
FHV files carry no fares or payment types: those charts are left out for them."""

from __future__ import annotations

import re

from civiclake.report import charts
from civiclake.report._source import DATA_VIEW, Source, quote
from civiclake.report.page import Section

TABLE_PATTERN = re.compile(r"^tlc\.(yellow|green|fhv)_trips$")
ZONES_TABLE = "tlc.taxi_zones"
PICKUP_COLUMNS = ("tpep_pickup_datetime", "lpep_pickup_datetime", "pickup_datetime")
ZONE_COLUMNS = ("PULocationID", "PUlocationID")
TOP_ZONES = 15
# TLC data dictionary codes
PAYMENT_TYPES = {
    1: "Credit card",
    2: "Cash",
    3: "No charge",
    4: "Dispute",
    5: "Unknown",
    6: "Voided trip",
}
# (bin width, cap) of each histogram: values >= cap land in the last bin
FARE_BINS = (2.5, 100.0)
TIP_PERCENT_BINS = (2.5, 50.0)  # percent of the fare
CARD = 1  # payment_type of a credit card: the only trips whose tips the meter records
DISTANCE_BINS = (0.5, 30.0)


def pickup_column(columns: dict[str, str]) -> str | None:
    return next((c for c in PICKUP_COLUMNS if c in columns), None)


def _histogram(source: Source, expr: str, where: str, width: float, cap: float) -> list[dict]:
    """Counts per bin of ``expr`` over [0, cap) plus a last bin for >= cap; negatives and
    NULLs are left out (counted in the chart's note). All in SQL: one GROUP BY."""
    return source.rows(
        f"""
        WITH v AS (SELECT {expr} AS x FROM {DATA_VIEW} WHERE {where}),
        b AS (SELECT least(floor(x / {width}), {cap / width}) * {width} AS bin_start
              FROM v WHERE x >= 0)
        SELECT round(bin_start, 4) AS bin_start, round(bin_start + {width}, 4) AS bin_end,
               count(*) AS trips
        FROM b GROUP BY bin_start ORDER BY bin_start
        """
    )


def sections(source: Source) -> list[Section]:
    t = DATA_VIEW
    pickup = quote(source.time_column or "")
    out = []
    volume = Section("Trips")
    volume.items.append(
        charts.make(
            "trips_per_day",
            "Trips per day",
            source.rows(
                f"SELECT {pickup}::DATE AS day, count(*) AS trips FROM {t} GROUP BY 1 ORDER BY 1"
            ),
            charts.bars("day", "trips", x_type="T"),
        )
    )
    volume.items.append(
        charts.make(
            "trips_by_hour",
            f"Trips by hour of day ({source.time_column})",
            source.rows(
                f"SELECT hour({pickup}) AS hour, count(*) AS trips FROM {t} GROUP BY 1 ORDER BY 1"
            ),
            charts.bars("hour", "trips", x_type="O"),
        )
    )
    out.append(volume)
    cols = source.columns
    if "fare_amount" in cols:
        money = Section("Fares, tips and distances")
        fare_w, fare_cap = FARE_BINS
        money.items.append(
            charts.make(
                "fare_distribution",
                f"Fare amount (USD; the last bar is {fare_cap:g} and more)",
                _histogram(source, "fare_amount", "fare_amount IS NOT NULL", fare_w, fare_cap),
                charts.histogram("bin_start", "bin_end", "trips", "fare_amount"),
                note="negative fares and NULLs are left out",
            )
        )
        if "payment_type" in cols and "tip_amount" in cols:
            # cash tips are not recorded (tip_amount 0): mixing them in halves the picture
            tip_w, tip_cap = TIP_PERCENT_BINS
            money.items.append(
                charts.make(
                    "tip_share_distribution",
                    f"Tip as a percent of the fare, card payments (the last bar is {tip_cap:g}% "
                    "and more)",
                    _histogram(
                        source,
                        "100.0 * tip_amount / fare_amount",
                        f"payment_type = {CARD} AND fare_amount > 0",
                        tip_w,
                        tip_cap,
                    ),
                    charts.histogram(
                        "bin_start", "bin_end", "trips", "tip, % of the fare", x_unit="%"
                    ),
                    note="credit card trips (payment_type 1) with a positive fare; cash tips "
                    "are not recorded",
                )
            )
        dist_w, dist_cap = DISTANCE_BINS
        money.items.append(
            charts.make(
                "distance_distribution",
                f"Trip distance (miles; the last bar is {dist_cap:g} and more)",
                _histogram(source, "trip_distance", "trip_distance IS NOT NULL", dist_w, dist_cap),
                charts.histogram("bin_start", "bin_end", "trips", "trip_distance"),
            )
        )
        out.append(money)
    places = Section("Where and how")
    zone_col = next((c for c in ZONE_COLUMNS if c in cols), None)
    if zone_col:
        has_zones = source.has(ZONES_TABLE)
        label = (
            "coalesce(z.zone || ' (' || z.borough || ')', 'zone ' || p.id::VARCHAR)"
            if has_zones
            else "'zone ' || p.id::VARCHAR"
        )
        join = (
            f"LEFT JOIN {quote('tlc')}.{quote('taxi_zones')} z ON z.locationid = p.id"
            if has_zones
            else ""
        )
        places.items.append(
            charts.make(
                "top_pickup_zones",
                f"Top {TOP_ZONES} pickup zones",
                source.rows(
                    f"""
                    WITH p AS (
                        SELECT {quote(zone_col)} AS id, count(*) AS trips FROM {t}
                        GROUP BY 1 ORDER BY trips DESC, id LIMIT {TOP_ZONES}
                    )
                    SELECT p.id AS location_id, {label} AS zone, p.trips
                    FROM p {join} ORDER BY p.trips DESC, p.id
                    """
                ),
                charts.bars("zone", "trips", horizontal=True, sort="-x"),
                note=""
                if has_zones
                else f"{ZONES_TABLE} is not loaded: zones are shown by id (a taxi run loads it)",
            )
        )
    if "payment_type" in cols:
        names = " ".join(f"WHEN {k} THEN '{v}'" for k, v in PAYMENT_TYPES.items())
        places.items.append(
            charts.make(
                "payment_types",
                "Payment type mix",
                source.rows(
                    f"""
                    SELECT payment_type,
                           CASE payment_type {names}
                                ELSE coalesce('code ' || payment_type::VARCHAR, '(none)')
                           END AS payment, count(*) AS trips
                    FROM {t} GROUP BY ALL ORDER BY trips DESC
                    """
                ),
                charts.bars("payment", "trips", horizontal=True, sort="-x"),
            )
        )
    if places.items:
        out.append(places)
    return out
