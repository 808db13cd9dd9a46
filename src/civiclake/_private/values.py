"""Query values for scripts and people, exactly: the one rule for ``--format json``, CSV and tables.

Why not ``json.dumps(default=str)`` on Python values: a DECIMAL went through ``float``
(``1234567890123.123456789`` printed ``1234567890123.1235``), ``jq`` reads numbers as doubles
(a snapshot id ``5932521785987576227`` became ``5932521785987576000``), ``NaN`` is not JSON, and
an interval printed as ``[0, 3, 0]``. The rule:

- integers beyond 2^53 and every decimal with a fractional scale are exact JSON strings;
- NaN and infinities are ``null`` in JSON (``NaN``/``Infinity`` as CSV text);
- structs and maps are JSON objects, lists JSON arrays (their JSON text in a CSV cell);
- intervals are ISO-8601 durations (``P1M3DT4H``), timestamps ISO-8601 with their zone.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

JSON_SAFE_INTEGER = 2**53  # beyond it a JSON reader (JavaScript, jq) rounds the number


def _duration(months: int, days: int, nanoseconds: int) -> str:
    """ISO-8601 duration; ``P0D`` for zero, a leading ``-`` only when every part is negative."""
    sign = ""
    if months <= 0 and days <= 0 and nanoseconds <= 0 and (months or days or nanoseconds):
        sign, months, days, nanoseconds = "-", -months, -days, -nanoseconds
    years, months = divmod(months, 12) if months >= 0 else (0, months)
    date_part = "".join(
        f"{value}{unit}" for value, unit in ((years, "Y"), (months, "M"), (days, "D")) if value
    )
    seconds_total = Decimal(nanoseconds) / Decimal(1_000_000_000)
    time_part = ""
    if nanoseconds:
        negative = seconds_total < 0
        whole = abs(seconds_total)
        hours, rest = divmod(whole, 3600)
        minutes, seconds = divmod(rest, 60)
        pieces = []
        if hours:
            pieces.append(f"{int(hours)}H")
        if minutes:
            pieces.append(f"{int(minutes)}M")
        if seconds:
            pieces.append(f"{format(seconds.normalize(), 'f')}S")
        time_part = "T" + "".join(("-" if negative else "") + p for p in pieces)
    text = date_part + time_part
    return f"{sign}P{text}" if text else "P0D"


def iso_interval(value: Any) -> str | None:
    """An Arrow interval (``MonthDayNano``) or a ``timedelta`` as ISO-8601, else None."""
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return _duration(0, 0, micros * 1000)
    if type(value).__name__ == "MonthDayNano" and hasattr(value, "nanoseconds"):
        return _duration(value.months, value.days, value.nanoseconds)
    return None


def decimal_text(value: Decimal) -> str:
    """A decimal exactly as stored (never scientific notation)."""
    return format(value, "f")


def json_value(value: Any) -> Any:
    """``value`` (a Python value of an Arrow column) as a JSON-safe value, by the rule above."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= JSON_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if value == value.to_integral_value() and value.as_tuple().exponent >= 0:
            return json_value(int(value))  # an integer DECIMAL(38,0), e.g. DuckDB's sum()
        return decimal_text(value)
    interval = iso_interval(value)
    if interval is not None:
        return interval
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and type(value).__name__ != "MonthDayNano":
        if all(isinstance(item, tuple) and len(item) == 2 for item in value) and value:
            return {str(k): json_value(v) for k, v in value}  # an Arrow map: key/value pairs
        return [json_value(v) for v in value]
    return str(value)


def text_value(value: Any) -> str:
    """``value`` as the text of a CSV cell or a table cell: exact, nested values as JSON."""
    if value is None:
        return ""
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    converted = json_value(value)
    if isinstance(converted, dict | list):
        return json.dumps(converted, ensure_ascii=False)
    return str(converted)


def dumps(payload: Any) -> str:
    """``payload`` (records of plain values) as strict JSON (no NaN), by the rule above."""
    return json.dumps(json_value(payload), ensure_ascii=False, allow_nan=False)
