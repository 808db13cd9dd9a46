"""The slice kinds: the set-of-windows slice merges, orders and filters exactly."""

from datetime import date

import pyarrow as pa
import pytest

from civiclake.slices import Window, Windows


def test_windows_merge_adjacent_days_and_keep_gaps() -> None:
    days = [date(2024, 3, 14), date(2024, 3, 1), date(2024, 3, 2)]
    replaced = Windows.of_days("date", days)
    assert replaced.windows == (
        Window("date", date(2024, 3, 1), date(2024, 3, 3)),
        Window("date", date(2024, 3, 14), date(2024, 3, 15)),
    )
    assert (replaced.start, replaced.stop) == (date(2024, 3, 1), date(2024, 3, 15))
    assert str(replaced) == "date in [2024-03-01, 2024-03-03), [2024-03-14, 2024-03-15)"
    assert Windows.of_days("date", reversed(days)) == replaced


def test_windows_iceberg_filter_selects_only_the_days_present() -> None:
    from pyiceberg.expressions.visitors import expression_evaluator
    from pyiceberg.schema import Schema
    from pyiceberg.types import DateType, NestedField

    schema = Schema(NestedField(1, "date", DateType(), required=False))
    replaced = Windows.of_days("date", [date(2024, 3, 1), date(2024, 3, 14)])
    evaluate = expression_evaluator(schema, replaced.iceberg_filter(), case_sensitive=True)
    kept = [d for d in range(1, 20) if evaluate(_Row(date(2024, 3, d)))]
    assert kept == [1, 14]
    assert pa is not None


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="empty window"):
        Windows.of("date", [(date(2024, 3, 2), date(2024, 3, 2))])


class _Row:
    """A one-column record as PyIceberg's evaluator reads it."""

    def __init__(self, value: object) -> None:
        self._value = value

    def __getitem__(self, pos: int) -> object:
        return self._value
