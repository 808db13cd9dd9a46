"""The warehouse conformance suite: one abstract test class every warehouse runs.

The shape of Prefect's ``standard_test_suites``: a subclass per warehouse (in its own test
module) provides the fixture ``warehouse`` (an open warehouse of that kind, its settings in the
environment) and ``rows`` (how a second reader sees a table); every test here then runs against
it. What a warehouse declares in ``WAREHOUSE_MODULES`` (its ``Capabilities``) is what the suite
holds it to: each slice kind, a re-run that changes nothing, a failed load that leaves the
previous rows, new columns, the types, rejects tables, two tables loaded at once.

Adding a warehouse: a module, a registry entry, and a subclass of ``WarehouseSuite`` passing.
"""

from __future__ import annotations

import threading
import traceback
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from civiclake.config import get_settings
from civiclake.errors import CivicLakeError
from civiclake.lake import Lake
from civiclake.slices import RowIds, Slice, WholeTable, Window, Windows
from civiclake.sources import bnt
from civiclake.warehouse import WAREHOUSE_MODULES, Warehouse, open_warehouse

JAN, FEB = date(2024, 1, 1), date(2024, 2, 1)
TYPES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("amount", pa.decimal128(38, 9)),
        ("at", pa.timestamp("us", tz="UTC")),
        ("geom", pa.string()),  # geometry as WKT text, as Socrata's exports give it
        ("flag", pa.bool_()),
    ]
)
TYPES_ROWS = {
    "id": ["a", "b", "c", "d"],
    "amount": [
        Decimal("99999999999999999999999999999.999999999"),  # 29 + 9 digits: the widest
        Decimal("-0.000000001"),
        Decimal("0E-9"),
        None,
    ],
    "at": [
        datetime(2024, 3, 10, 7, 0, 0, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 999_999, tzinfo=UTC),
        None,
    ],
    "geom": [
        "POINT (-73.98513 40.758896)",
        "MULTIPOLYGON (((-74 40.7, -73.9 40.7, -73.9 40.8, -74 40.7)))",
        "",
        None,
    ],
    "flag": [True, False, None, True],
}


class WarehouseSuite:
    """Every warehouse's contract, proved against the real thing.

    Subclasses set ``kind`` and provide the ``warehouse`` fixture and ``rows``.
    """

    kind: ClassVar[str]
    trip_types: ClassVar[dict[str, str]]
    """Column -> the type ``column_types`` reports, for the trips ``data.make`` writes."""

    @pytest.fixture
    def warehouse(self) -> Warehouse:
        raise NotImplementedError

    def rows(self, warehouse: Warehouse, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
        """Every row of ``table`` as another connection reads it, ``columns`` in order."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------

    @pytest.fixture
    def table(self, namespace: str) -> str:
        return f"{namespace}.trips"

    def content(
        self, warehouse: Warehouse, table: str, schema: pa.Schema, key: str = "trip_id"
    ) -> list[Any]:
        """The table's rows sorted by ``key`` (the order a warehouse returns them in is no
        contract; ``key`` is unique in each test's rows)."""
        at = schema.names.index(key)
        return sorted(self.rows(warehouse, table, schema.names), key=lambda row: row[at])

    @staticmethod
    def expected(*tables: pa.Table, key: str = "trip_id") -> list[Any]:
        rows = [tuple(row.values()) for t in tables for row in t.to_pylist()]
        at = tables[0].schema.names.index(key)
        return sorted(rows, key=lambda row: row[at])

    def load(
        self,
        warehouse: Warehouse,
        data: Any,
        table: str,
        rows: pa.Table,
        replaced: Slice,
        name: str,
        **kwargs: Any,
    ) -> int:
        return warehouse.replace(
            table, rows.schema, [data.write(rows, name)], data.lake, replaced, **kwargs
        )

    @staticmethod
    def month(first: date, column: str) -> Window:
        stop = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return Window(column, datetime(first.year, first.month, 1), datetime(*stop.timetuple()[:3]))

    @staticmethod
    def with_row_id(trips: pa.Table) -> pa.Table:
        """Trips with a text row id, as a Socrata dataset's ``:id``."""
        return trips.append_column("row_id", pc.cast(trips["trip_id"], pa.string()))

    # -- the registry -----------------------------------------------------------------------

    def test_the_registry_declares_every_slice_kind(self) -> None:
        """The suite proves these; a warehouse that cannot do one must not declare it."""
        capabilities = WAREHOUSE_MODULES[self.kind].capabilities
        assert capabilities.slices == {WholeTable, Window, Windows, RowIds}
        assert capabilities.evolves and capabilities.transactions and capabilities.merges

    def test_open_warehouse_returns_this_kind(self, warehouse: Warehouse) -> None:
        with open_warehouse(self.kind, get_settings()) as opened:
            assert type(opened) is type(warehouse)
            assert isinstance(opened, Warehouse) and opened.name == self.kind

    # -- each slice kind --------------------------------------------------------------------

    def test_a_window_replaces_only_its_window(
        self, warehouse: Warehouse, data: Any, table: str
    ) -> None:
        jan, feb = data.make(JAN, 300), data.make(FEB, 200, first_id=10_000)
        assert (
            self.load(warehouse, data, table, jan, self.month(JAN, data.range_column), "j") == 300
        )
        self.load(warehouse, data, table, feb, self.month(FEB, data.range_column), "f")
        new_jan = data.make(JAN, 120, first_id=20_000, tag="new ")

        loaded = self.load(
            warehouse, data, table, new_jan, self.month(JAN, data.range_column), "j2"
        )

        assert loaded == 120
        assert self.content(warehouse, table, data.schema) == self.expected(new_jan, feb)

    def test_windows_replace_only_their_days(
        self, warehouse: Warehouse, data: Any, table: str
    ) -> None:
        """A file holding days 2 and 4 replaces those two days, never day 3 between them."""
        column = data.range_column
        january = data.make(JAN, 800)  # a trip every 13 minutes: about a week
        self.load(warehouse, data, table, january, self.month(JAN, column), "all")
        days = {date(2024, 1, 2), date(2024, 1, 4)}

        def on(rows: pa.Table, wanted: set[date]) -> pa.Table:
            mask = [ts.date() in wanted for ts in rows[column].to_pylist()]
            return rows.filter(pa.array(mask))

        revised = on(data.make(JAN, 800, first_id=50_000, tag="rev "), days)
        assert revised.num_rows > 100
        replaced = Windows.of_days(column, days)

        assert self.load(warehouse, data, table, revised, replaced, "days") == revised.num_rows
        kept = on(january, {date(2024, 1, d) for d in range(1, 32)} - days)
        assert self.content(warehouse, table, data.schema) == self.expected(kept, revised)

    def test_row_ids_merge_revised_and_new_rows(
        self, warehouse: Warehouse, data: Any, table: str
    ) -> None:
        first = self.with_row_id(data.make(JAN, 300))
        self.load(warehouse, data, table, first, WholeTable(), "first", evolve=True)
        revised = self.with_row_id(data.make(JAN, 100, first_id=250, tag="rev "))
        ids = RowIds.of("row_id", revised["row_id"].to_pylist())

        assert self.load(warehouse, data, table, revised, ids, "merge", evolve=True) == 100

        assert self.content(warehouse, table, first.schema) == self.expected(
            first.slice(0, 250), revised
        )
        # no ids: nothing deleted, the rows appended
        extra = self.with_row_id(data.make(JAN, 5, first_id=900))
        self.load(warehouse, data, table, extra, RowIds.of("row_id", []), "none")
        assert len(self.rows(warehouse, table, ["row_id"])) == 355

    def test_a_window_of_dates_or_zoned_timestamps(
        self, warehouse: Warehouse, data: Any, table: str
    ) -> None:
        """Windows on a DATE and on a zoned timestamp column; NULLs are in no window."""
        rows = data.make(JAN, 100)
        self.load(warehouse, data, table, rows, self.month(JAN, data.range_column), "jan")
        first_day = Window("pickup_date", date(2024, 1, 1), date(2024, 1, 2))

        assert warehouse.replace(table, data.schema, [], data.lake, first_day) == 0

        left = [r for r in rows.to_pylist() if r["pickup_date"] != date(2024, 1, 1)]
        assert len(self.rows(warehouse, table, ["trip_id"])) == len(left) < 100
        y2k = datetime(2000, 1, 1, tzinfo=UTC)
        zoned = Window("loaded_at", y2k, datetime(2100, 1, 1, tzinfo=UTC))
        warehouse.replace(table, data.schema, [], data.lake, zoned)
        kept = [(r["trip_id"],) for r in left if r["loaded_at"] is None or r["loaded_at"] < y2k]
        assert sorted(self.rows(warehouse, table, ["trip_id"])) == sorted(kept)
        assert kept

    def test_the_whole_table_is_replaced(self, warehouse: Warehouse, data: Any, table: str) -> None:
        self.load(warehouse, data, table, data.make(JAN, 300), WholeTable(), "old")
        self.load(warehouse, data, table, data.make(FEB, 40, first_id=1), WholeTable(), "feb")
        fresh = data.make(JAN, 70, first_id=5_000, tag="fresh ")

        assert self.load(warehouse, data, table, fresh, WholeTable(), "fresh") == 70

        assert self.content(warehouse, table, data.schema) == self.expected(fresh)
        assert warehouse.replace(table, data.schema, [], data.lake, WholeTable()) == 0
        assert warehouse.count(table) == 0

    # -- re-runs and failures ---------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["window", "windows", "row ids", "whole table"])
    def test_a_rerun_changes_nothing(
        self, warehouse: Warehouse, data: Any, table: str, kind: str
    ) -> None:
        rows = self.with_row_id(data.make(JAN, 400))
        replaced: Slice = {
            "window": self.month(JAN, data.range_column),
            "windows": Windows.of_days(data.range_column, [date(2024, 1, d) for d in range(1, 5)]),
            "row ids": RowIds.of("row_id", rows["row_id"].to_pylist()),
            "whole table": WholeTable(),
        }[kind]
        url = data.write(rows, "rows.parquet")
        warehouse.replace(table, rows.schema, [url], data.lake, replaced)
        once = self.content(warehouse, table, rows.schema)

        assert warehouse.replace(table, rows.schema, [url], data.lake, replaced) == 400

        assert self.content(warehouse, table, rows.schema) == once == self.expected(rows)

    @pytest.mark.parametrize("failure", ["missing file", "foreign schema", "corrupt data"])
    def test_a_failed_load_leaves_the_previous_rows(
        self, warehouse: Warehouse, data: Any, table: str, failure: str
    ) -> None:
        window = self.month(JAN, data.range_column)
        before_rows = data.make(JAN, 600)
        self.load(warehouse, data, table, before_rows, window, "good")
        replacement = data.write(data.make(JAN, 300, first_id=90_000), "new.parquet")
        if failure == "missing file":
            bad = data.lake.join("stage", "nowhere.parquet")
        elif failure == "foreign schema":
            bad = data.write(data.make(JAN, 10).drop_columns(["Note"]), "foreign.parquet")
        else:  # the footer reads fine; a data page fails half-way through the load
            bad = data.write(data.make(JAN, 3000, first_id=70_000), "corrupt.parquet")
            corrupt_middle(data.lake, bad)

        with pytest.raises(CivicLakeError) as caught:
            warehouse.replace(table, data.schema, [replacement, bad], data.lake, window)

        assert "\n" not in str(caught.value)
        assert self.content(warehouse, table, data.schema) == self.expected(before_rows)
        # and the warehouse still works afterwards
        assert warehouse.replace(table, data.schema, [replacement], data.lake, window) == 300

    # -- schema evolution and types ---------------------------------------------------------

    def test_a_new_column_is_added_with_evolve_and_refused_without(
        self, warehouse: Warehouse, data: Any, table: str
    ) -> None:
        rows = self.with_row_id(data.make(JAN, 50))
        old = rows.drop_columns(["Note"])
        self.load(warehouse, data, table, old, WholeTable(), "old", evolve=True)
        newer = self.with_row_id(data.make(JAN, 20, first_id=1_000, tag="new "))
        ids = RowIds.of("row_id", newer["row_id"].to_pylist())

        with pytest.raises(CivicLakeError, match=r"lacks columns \['Note'\]"):
            self.load(warehouse, data, table, newer, ids, "refused")
        assert warehouse.count(table) == 50

        assert self.load(warehouse, data, table, newer, ids, "evolved", evolve=True) == 20
        assert "Note" in warehouse.column_types(table)
        got = self.content(warehouse, table, rows.schema)
        padded = old.append_column("Note", pa.nulls(50, pa.string())).select(rows.schema.names)
        assert got == self.expected(padded, newer)

    def test_a_failed_evolving_load_adds_no_column(
        self, warehouse: Warehouse, data: Any, table: str
    ) -> None:
        """A load that would add a column and fails half-way leaves the table as it was:
        columns included (BigQuery's DDL cannot be in its transaction: it runs only once
        every file is staged)."""
        rows = self.with_row_id(data.make(JAN, 50))
        old = rows.drop_columns(["Note"])
        self.load(warehouse, data, table, old, WholeTable(), "old", evolve=True)
        newer = self.with_row_id(data.make(JAN, 20, first_id=1_000, tag="new "))
        good = data.write(newer, "newer.parquet")
        bad = data.write(self.with_row_id(data.make(JAN, 3000, first_id=70_000)), "bad.parquet")
        corrupt_middle(data.lake, bad)
        ids = RowIds.of("row_id", [*newer["row_id"].to_pylist(), "70000"])

        with pytest.raises(CivicLakeError):
            warehouse.replace(table, newer.schema, [good, bad], data.lake, ids, evolve=True)

        assert "Note" not in warehouse.column_types(table)
        assert self.content(warehouse, table, old.schema) == self.expected(old)

    def test_types_round_trip(self, warehouse: Warehouse, data: Any, table: str) -> None:
        """decimal(38,9) at its widest, zoned timestamps, WKT geometry text, booleans."""
        rows = pa.Table.from_pydict(TYPES_ROWS, schema=TYPES_SCHEMA)
        self.load(warehouse, data, table, rows, WholeTable(), "types")
        got = self.content(warehouse, table, TYPES_SCHEMA, key="id")
        assert got == self.expected(rows, key="id")

    def test_every_trip_type_round_trips(self, warehouse: Warehouse, data: Any, table: str) -> None:
        """Every Arrow type the warehouses map, NULLs, awkward text, mixed-case names, and the
        files' columns in any order (rows load by name)."""
        january = data.make(JAN, 1200)
        reordered = january.select(list(reversed(january.column_names)))
        urls = [
            data.write(january.slice(0, 500), "a.parquet"),
            data.write(reordered.slice(500), "b.parquet"),
        ]
        window = self.month(JAN, data.range_column)
        assert warehouse.replace(table, data.schema, urls, data.lake, window) == 1200
        assert self.content(warehouse, table, data.schema) == self.expected(january)
        assert warehouse.column_types(table) == self.trip_types, warehouse.column_types(table)
        flags = [row["store_and_fwd_flag"] for row in january.to_pylist()]
        assert warehouse.count(table) == 1200
        assert warehouse.count(table, "store_and_fwd_flag = ''") == flags.count("") > 0
        assert warehouse.count(table, "store_and_fwd_flag IS NULL") == flags.count(None) > 0
        assert flags.count("NULL") + flags.count("\\N") > 0  # text that looks like NULL stays text

    # -- rejects and concurrency ------------------------------------------------------------

    def test_a_rejects_table_is_replaced_by_load_key(
        self, warehouse: Warehouse, data: Any, namespace: str
    ) -> None:
        """B&T's rejects table, as the flow loads it: one load key's rejects at a time."""
        rejects = f"{namespace}.rejects"

        def made(key: str, reasons: list[str]) -> pa.Table:
            n = len(reasons)
            return pa.Table.from_pydict(
                {
                    "date": [JAN] * n,
                    "reason": reasons,
                    "raw_record": ['{"hour": "24"}'] * n,
                    "load_range": [key] * n,
                    "load_run_id": ["run"] * n,
                    "load_source": ["test"] * n,
                    "rejected_at": [datetime(2024, 1, 2, tzinfo=UTC)] * n,
                },
                schema=bnt.REJECTS_ARROW_SCHEMA,
            )

        a, b = made("A", ["hour: 24", "direction: N"]), made("B", ["bad number"])
        self.load(warehouse, data, rejects, a, RowIds.of("load_range", ["A"]), "a")
        self.load(warehouse, data, rejects, b, RowIds.of("load_range", ["B"]), "b")
        again = made("A", ["hour: 24"])

        self.load(warehouse, data, rejects, again, RowIds.of("load_range", ["A"]), "a2")

        got = self.content(warehouse, rejects, bnt.REJECTS_ARROW_SCHEMA, key="reason")
        assert got == self.expected(again, b, key="reason")

    def test_two_tables_load_at_once(self, warehouse: Warehouse, data: Any, namespace: str) -> None:
        """Each thread with a warehouse object of its own, as concurrent flow tasks have."""
        tables = [f"{namespace}.trips_a", f"{namespace}.trips_b"]
        payloads = [data.make(JAN, 400, tag=t) for t in ("a ", "b ")]
        urls = [data.write(p, f"{i}.parquet") for i, p in enumerate(payloads)]
        window = self.month(JAN, data.range_column)
        errors: list[BaseException] = []
        settings = get_settings()

        def load(table: str, url: str) -> None:
            try:
                with open_warehouse(self.kind, settings) as own:
                    own.replace(table, data.schema, [url], data.lake, window)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=load, args=pair) for pair in zip(tables, urls, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        for table, payload in zip(tables, payloads, strict=True):
            assert self.content(warehouse, table, data.schema) == self.expected(payload)


def corrupt_middle(lake: Lake, url: str) -> None:
    """Overwrite bytes in the middle of a Parquet file: its footer stays readable."""
    raw = bytearray(lake.read_bytes(url))
    middle = len(raw) // 2
    raw[middle : middle + 4096] = b"\xa5" * 4096
    lake.write_bytes(url, bytes(raw))


def shown(exc: BaseException | None) -> str:
    """Every message a traceback would print for ``exc`` (its cause or context chain too)."""
    messages = []
    while exc is not None:
        messages += traceback.format_exception_only(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "".join(messages)
