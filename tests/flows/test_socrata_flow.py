"""End to end: ``civiclake socrata describe/run`` on any dataset, through the real Prefect
flow, against the local Socrata replay server (metadata, system fields, omitted nulls,
faults), into real Iceberg tables: full first load, incremental merge by ``:id``, full refresh
dropping deleted rows, a new column, rejects, other portals, bad input."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.testing.socrata import Fault, SocrataServer
from civiclake.testing.socrata_samples import (
    COLUMNS,
    DATASET,
    sample_row,
    sample_rows,
)

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

TABLE = "socrata.abcd_1234"
ROWS = 25


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocrataServer]:
    srv = SocrataServer()
    srv.add_dataset(DATASET, sample_rows(ROWS), columns=COLUMNS, name="Every type")
    srv.add_view("char-tabl", {"id": "char-tabl", "assetType": "chart", "viewType": "tabular"})
    with srv:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", srv.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "10")
        yield srv


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def rows_of(name: str = TABLE) -> list[dict]:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow().to_pylist()


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["socrata_id"]: r for r in rows}


def test_describe_names_each_column_and_its_type(server: SocrataServer) -> None:
    result = cli("socrata", "describe", DATASET)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"Every type ({server.url}/{DATASET})" in text
    assert f"rows: {ROWS}" in text and f"table: {TABLE}" in text
    assert "run would load: everything, replacing the table (full)" in text
    for expected in ("number", "decimal(38, 9)", "timestamptz", "boolean", "computed_region"):
        assert expected in text


def test_first_run_then_incremental_merge_then_full_refresh(server: SocrataServer) -> None:
    first = cli("socrata", "run", DATASET)
    assert first.exit_code == 0, first.output
    loaded = by_id(rows_of())
    assert len(loaded) == ROWS
    row = loaded["row-00007"]
    assert row["zip"] == "00007" and row["count"] == Decimal("3000000007")
    assert row["fare"] == Decimal("7.50") and row["flag"] is False
    assert loaded["row-00003"]["share"] is None  # omitted by the API: NULL
    assert row["website"] == "https://example.org/7"
    assert row["location_latitude"] == 40.5 + 7 * 0.125
    assert all(r.params.get("$order") == ":id" for r in server.requests if "$limit" in r.params)

    # the source revises two rows and adds three
    revised = sample_rows(ROWS)
    for i in (4, 11):
        revised[i] = {**sample_row(i, minutes=500), "zip": f"REV{i}"}
    revised += [sample_row(i, minutes=600) for i in range(ROWS, ROWS + 3)]
    server.add_dataset(DATASET, revised, columns=COLUMNS, name="Every type")
    server.requests.clear()
    second = cli("socrata", "run", DATASET)
    assert second.exit_code == 0, second.output
    merged = rows_of()
    ids = [r["socrata_id"] for r in merged]
    assert len(ids) == len(set(ids)) == ROWS + 3  # no duplicate socrata_id
    assert by_id(merged)["row-00004"]["zip"] == "REV4"
    assert by_id(merged)["row-00011"]["zip"] == "REV11"
    # only the rows updated since the high-water mark (minus the overlap) were fetched
    wheres = {r.params.get("$where", "") for r in server.requests if "$limit" in r.params}
    assert wheres and all(":updated_at >= " in w for w in wheres)
    table = tables.load_catalog(get_settings()).load_table(TABLE)
    props = table.current_snapshot().summary.additional_properties
    # the 5 changed rows, and the 11 rows updated within the 10-minute overlap (minutes 14-24)
    assert props["civiclake.rows-fetched"] == "16"
    assert props["civiclake.high-water-mark"].startswith("2024-03-01T22:00:00")  # 600 min later

    # rows deleted at the source: kept by incremental runs, dropped by --full
    server.add_dataset(DATASET, revised[2:], columns=COLUMNS, name="Every type")
    assert cli("socrata", "run", DATASET).exit_code == 0
    assert len(rows_of()) == ROWS + 3
    full = cli("socrata", "run", DATASET, "--full")
    assert full.exit_code == 0, full.output
    remaining = by_id(rows_of())
    assert len(remaining) == ROWS + 1 and "row-00000" not in remaining
    assert remaining["row-00004"]["zip"] == "REV4"


def test_a_new_column_is_added_and_old_rows_are_null(server: SocrataServer) -> None:
    assert cli("socrata", "run", DATASET).exit_code == 0
    grown = [*COLUMNS, ("borough", "text")]
    rows = [*sample_rows(ROWS), {**sample_row(ROWS, minutes=900), "borough": "QUEENS"}]
    server.add_dataset(DATASET, rows, columns=grown, name="Every type")
    result = cli("socrata", "run", DATASET)
    assert result.exit_code == 0, result.output
    loaded = by_id(rows_of())
    assert loaded[f"row-{ROWS:05d}"]["borough"] == "QUEENS"
    assert loaded["row-00001"]["borough"] is None


def test_values_that_do_not_fit_go_to_rejects_and_the_run_goes_on(
    server: SocrataServer,
) -> None:
    rows = sample_rows(ROWS)
    rows[5]["count"] = "five"
    rows[6]["closed_at"] = "yesterday"
    server.add_dataset(DATASET, rows, columns=COLUMNS, name="Every type")
    result = cli("socrata", "run", DATASET)
    assert result.exit_code == 0, result.output
    assert len(rows_of()) == ROWS - 2
    rejects = rows_of(f"{TABLE}_rejects")
    reasons = {r["socrata_id"]: r["reason"] for r in rejects}
    assert reasons["row-00005"].startswith("count: 'five' is not a valid number")
    assert reasons["row-00006"].startswith("closed_at: 'yesterday' is not a valid")
    # fixed at the source: the next incremental run moves them out of the rejects
    fixed = sample_rows(ROWS)
    for i in (5, 6):
        fixed[i] = sample_row(i, minutes=700)
    server.add_dataset(DATASET, fixed, columns=COLUMNS, name="Every type")
    assert cli("socrata", "run", DATASET).exit_code == 0
    assert len(rows_of()) == ROWS and rows_of(f"{TABLE}_rejects") == []


def test_faults_are_retried_and_a_count_mismatch_fails_without_writing(
    server: SocrataServer,
) -> None:
    server.inject(Fault.RATE_LIMIT, retry_after=0, only="data")
    server.inject(Fault.SERVER_ERROR, only="data")
    server.inject(Fault.TRUNCATED, only="data")
    result = cli("socrata", "run", DATASET)
    assert result.exit_code == 0, result.output
    assert len(rows_of()) == ROWS
    statuses = Counter(r.status for r in server.requests)
    assert statuses[429] == 1 and statuses[500] == 1

    server.set_count_offset(3)  # the portal's count disagrees with the rows it serves
    snapshot = tables.load_catalog(get_settings()).load_table(TABLE).current_snapshot()
    failed = cli("socrata", "run", DATASET, "--full")
    assert failed.exit_code == 1
    assert (
        failed.output.strip()
        .splitlines()[-1]
        .startswith(
            f"error: Socrata dataset '{DATASET}': fetched {ROWS} rows but the portal counts"
        )
    )
    table = tables.load_catalog(get_settings()).load_table(TABLE)
    assert table.current_snapshot().snapshot_id == snapshot.snapshot_id


def test_a_dataset_url_of_another_portal(server: SocrataServer) -> None:
    with SocrataServer() as other:
        other.add_dataset("wxyz-9876", sample_rows(7), columns=COLUMNS, name="Elsewhere")
        result = cli(
            "socrata", "run", f"{other.url}/resource/wxyz-9876.json", "--table", "elsewhere.t"
        )
        assert result.exit_code == 0, result.output
        assert len(rows_of("elsewhere.t")) == 7
        assert server.requests == []  # the configured portal was never asked


def test_partitioned_by_month(server: SocrataServer) -> None:
    result = cli("socrata", "run", DATASET, "--partition", "month(created_date)")
    assert result.exit_code == 0, result.output
    table = tables.load_catalog(get_settings()).load_table(TABLE)
    assert str(table.spec().fields[0].transform) == "month"
    assert len(rows_of()) == ROWS


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nope-0000"], 1, "Socrata dataset 'nope-0000' not found"),
        (["not-an-id!"], 2, "is not a dataset id"),
        (["char-tabl"], 2, "char-tabl is a chart"),
        ([DATASET, "--partition", "month(nope)"], 2, "has no column 'nope'"),
        ([DATASET, "--partition", "week(created_date)"], 2, "use month(COLUMN)"),
        ([DATASET, "--table", "NoNamespace"], 2, "use NAMESPACE.NAME"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    server: SocrataServer, civiclake_home: Path, args: list[str], code: int, message: str
) -> None:
    result = cli("socrata", "run", *args)
    assert result.exit_code == code, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    catalog_file = civiclake_home / "catalog.db"
    assert not catalog_file.exists() or not tables.load_catalog(get_settings()).list_namespaces()


def test_a_dataset_named_in_the_config_file(
    server: SocrataServer, civiclake_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civiclake.cli import out

    monkeypatch.setattr(out, "_width", 200)  # one line per listed dataset
    civiclake_home.mkdir(parents=True, exist_ok=True)
    (civiclake_home / "civiclake.toml").write_text(
        f'[datasets.sample]\nid = "{DATASET}"\nportal = "{server.url}"\ntable = "cfg.sample"\n'
        "where = \"zip < '00010'\"\n"
    )
    assert "cfg.sample" in cli("socrata", "list").stdout
    result = cli("socrata", "run", "sample")
    assert result.exit_code == 0, result.output
    assert len(rows_of("cfg.sample")) == 10
    listed = cli("socrata", "list")
    assert listed.exit_code == 0 and f"{server.url}/{DATASET}" in listed.stdout
    assert " 10 " in listed.stdout


@pytest.mark.parametrize("to", ["duckdb", "postgres", "bigquery"])
def test_into_a_warehouse_full_then_merged_by_id(
    to: str,
    server: SocrataServer,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    civiclake_home: Path,
) -> None:
    """``--to``: the warehouse holds what Iceberg holds after a full load, an incremental
    merge (revised rows replaced, new ids added, a new column) and a full refresh (rows
    deleted at the source dropped), in every warehouse."""
    from civiclake.warehouse import open_warehouse

    if to == "postgres":  # one server for the session: start from empty tables
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", url)
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS socrata CASCADE")
    if to == "bigquery":  # the emulator's, for the session: start from empty tables
        emulator = request.getfixturevalue("bq_emulator")
        monkeypatch.setenv("CIVICLAKE_BIGQUERY_PROJECT", emulator.project)
        monkeypatch.setenv("CIVICLAKE_BIGQUERY_ENDPOINT", emulator.endpoint)
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(civiclake_home / "gcloud"))  # no ADC
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        with open_warehouse(to, get_settings()) as warehouse:
            for name in (TABLE, f"{TABLE}_rejects"):
                warehouse._client.delete_table(warehouse.table_id(name), not_found_ok=True)

    def warehouse_ids(where: str = "TRUE") -> int:
        with open_warehouse(to, get_settings()) as warehouse:
            return warehouse.count(TABLE, where)

    columns, dropped = COLUMNS, set()
    if to == "bigquery":  # money is decimal(38, 4): BIGNUMERIC, which bqemulator cannot create
        columns = [(name, kind) for name, kind in COLUMNS if kind != "money"]
        dropped = {name for name, kind in COLUMNS if kind == "money"}

    def served(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in dropped} for row in rows]

    server.add_dataset(DATASET, served(sample_rows(ROWS)), columns=columns)
    first = cli("socrata", "run", DATASET, "--to", to)
    assert first.exit_code == 0, first.output
    assert warehouse_ids() == ROWS and warehouse_ids("zip = '00007'") == 1

    revised = sample_rows(ROWS)
    revised[4] = {**sample_row(4, minutes=500), "zip": "REV4"}
    revised += [{**sample_row(ROWS, minutes=600), "borough": "QUEENS"}]
    server.add_dataset(DATASET, served(revised), columns=[*columns, ("borough", "text")])
    second = cli("socrata", "run", DATASET, "--to", to)
    assert second.exit_code == 0, second.output
    assert warehouse_ids() == ROWS + 1 == len(rows_of())
    assert warehouse_ids("zip = 'REV4'") == 1 and warehouse_ids("zip = '00004'") == 0
    assert warehouse_ids("borough = 'QUEENS'") == 1

    server.add_dataset(DATASET, served(revised[3:]), columns=[*columns, ("borough", "text")])
    assert cli("socrata", "run", DATASET, "--full", "--to", to).exit_code == 0
    assert warehouse_ids() == ROWS - 2 == len(rows_of())


def test_range_mode_replaces_a_date_window(server: SocrataServer) -> None:
    """``--date-field --start-date --stop-date``: the rows of that range are replaced, as
    ``bnt run`` does; rows outside it stay; rejects of the fetched rows are replaced by id."""
    first = cli(
        "socrata", "run", DATASET, "--date-field", "created_date",
        "--start-date", "2024-03-01", "--stop-date", "2024-03-05",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    days = {r["created_date"].day for r in rows_of()}
    assert days == {1, 2, 3, 4}
    in_window = [r for r in sample_rows(ROWS) if r["created_date"] < "2024-03-05"]
    assert len(rows_of()) == len(in_window)

    # the source revises a row of March 2 and drops one of March 3; a second window covers both
    rows = sample_rows(ROWS)
    rows[1] = {**sample_row(1, minutes=800), "zip": "REV1"}  # created 2024-03-02
    del rows[2]  # created 2024-03-03
    server.add_dataset(DATASET, rows, columns=COLUMNS, name="Every type")
    second = cli(
        "socrata", "run", DATASET, "--date-field", "created_date",
        "--start-date", "2024-03-02", "--stop-date", "2024-03-10",
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    loaded = by_id(rows_of())
    assert loaded["row-00001"]["zip"] == "REV1"
    assert "row-00002" not in loaded  # deleted inside the replaced window
    assert "row-00000" in loaded  # March 1: outside the second window, kept
    expected = [r for r in rows if r["created_date"] < "2024-03-10"]
    assert len(loaded) == len(expected)
    table = tables.load_catalog(get_settings()).load_table(TABLE)
    props = table.current_snapshot().summary.additional_properties
    assert props["civiclake.range"] == (
        "created_date in [2024-03-02T00:00:00, 2024-03-10T00:00:00)"
    )
    assert "civiclake.high-water-mark" not in props  # a window never starts incremental loads


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date-field", "created_date"], "needs --date-field COLUMN and --start-date"),
        (["--date-field", "zip", "--start-date", "2024-03-01"], "zip is text, not a date"),
        (["--date-field", "nope", "--start-date", "2024-03-01"], "has no column 'nope'"),
        (
            ["--date-field", "created_date", "--start-date", "2024-03-05", "--stop-date",
             "2024-03-01"],
            "must be after --start-date",
        ),
        (["--date-field", "created_date", "--start-date", "2024-3-1x"], "is not a date"),
    ],
)  # fmt: skip
def test_bad_range_options(
    server: SocrataServer, civiclake_home: Path, args: list[str], message: str
) -> None:
    result = cli("socrata", "run", DATASET, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (civiclake_home / "lake").exists()
