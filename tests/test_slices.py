"""The slice kinds: the set-of-windows slice merges, orders and filters exactly."""

from datetime import date
from pathlib import Path

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


def test_windows_iceberg_filter_deletes_only_the_days_present(tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/warehouse"
    )
    catalog.create_namespace("t")
    days = pa.table({"date": [date(2024, 3, d) for d in range(1, 20)]})
    table = catalog.create_table("t.days", schema=days.schema)
    table.append(days)
    table.delete(Windows.of_days("date", [date(2024, 3, 1), date(2024, 3, 14)]).iceberg_filter())
    left = {d.day for d in table.scan().to_arrow().column("date").to_pylist()}
    assert left == set(range(1, 20)) - {1, 14}


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="empty window"):
        Windows.of("date", [(date(2024, 3, 2), date(2024, 3, 2))])
