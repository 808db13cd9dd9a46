"""End to end: the CLI runs the real Prefect flow against the local Socrata replay server,
into real Iceberg tables. One temporary Prefect server for the whole session."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.testing.socrata import Fault, SocrataServer, bnt_rows

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

DATASET = "qzve-kjga"
SAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "bnt_sample.csv"
TODAY = date.today()
FIRST_DAY = TODAY - timedelta(days=30)
ROWS_PER_DAY = 480


@pytest.fixture(scope="module")
def server() -> Iterator[SocrataServer]:
    rows = bnt_rows(FIRST_DAY, 31)  # FIRST_DAY .. TODAY
    bad = [
        {**rows[0], "hour": "24"},
        {**rows[1], "vehicles_e_zpass": "lots"},
        {**rows[2], "direction": "N"},
    ]
    with SocrataServer({DATASET: rows + bad}) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _point_at_server(server: SocrataServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
    monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "2000")
    server.clear_faults()
    server.requests.clear()
    yield
    server.clear_faults()


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def day(offset: int) -> str:
    return (FIRST_DAY + timedelta(days=offset)).isoformat()


def table_rows(name: str = bnt.TABLE) -> list[dict]:
    table = tables.load_catalog(get_settings()).load_table(name)
    return table.scan().to_arrow().to_pylist()


def content(rows: list[dict]) -> list[tuple]:
    """Rows without load metadata, sorted: what must not change on a re-run."""
    keys = (
        "plaza_id",
        "facility",
        "date",
        "hour",
        "direction",
        "vehicles_e_zpass",
        "vehicles_vtoll",
    )
    return sorted(tuple(r[k] for k in keys) for r in rows)


def latest_summary_artifact() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["bnt-load-summary"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifacts, "no summary artifact"
    return str(artifacts[0].data)


def snapshot_id() -> int | None:
    catalog = tables.load_catalog(get_settings())
    if not catalog.table_exists(bnt.TABLE):
        return None
    snap = catalog.load_table(bnt.TABLE).current_snapshot()
    return snap.snapshot_id if snap else None


def test_range_run_loads_and_rerun_is_identical(civiclake_home: Path) -> None:
    first = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(3))
    assert first.exit_code == 0, first.output
    assert "rows loaded" in first.output and "1,440" in first.output
    rows = table_rows()
    assert len(rows) == 3 * ROWS_PER_DAY
    assert {r["date"] for r in rows} == {FIRST_DAY + timedelta(days=i) for i in range(3)}
    # the three invalid rows are dated FIRST_DAY: rejected, with reasons
    rejects = table_rows(bnt.REJECTS_TABLE)
    assert sorted(r["reason"].split(":")[0] for r in rejects) == [
        "direction not I or O",
        "hour missing or outside 0-23",
        "vehicles_e_zpass missing or not a non-negative integer",
    ]
    # every data request was ordered, and the pages are in the raw zone (no temp files)
    assert all(r.params.get("$order") == ":id" for r in server_requests_with_limit())
    raw_files = list((civiclake_home / "lake" / "raw").rglob("*"))
    pages = [p for p in raw_files if p.is_file()]
    assert len(pages) == 1 + (3 * ROWS_PER_DAY + 3) // 2000 and not any(
        p.name.startswith(".") for p in pages
    )
    table = tables.load_catalog(get_settings()).load_table(bnt.TABLE)
    props = table.current_snapshot().summary.additional_properties
    assert props["civiclake.range"] == f"{day(0)}/{day(3)}"
    assert props["civiclake.rows-loaded"] == "1440" and props["civiclake.rows-rejected"] == "3"

    artifact = latest_summary_artifact()
    assert "| rows_loaded | 1,440 |" in artifact
    # ids are copied into queries and tools: never with thousands separators
    assert f"| snapshot_id | {table.current_snapshot().snapshot_id} |" in artifact
    assert f"{table.current_snapshot().snapshot_id}" in first.output

    again = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(3))
    assert again.exit_code == 0, again.output
    assert content(table_rows()) == content(rows)
    assert len(table_rows(bnt.REJECTS_TABLE)) == 3


_last_server: list[SocrataServer] = []


@pytest.fixture(autouse=True)
def _remember(server: SocrataServer) -> None:
    _last_server[:] = [server]


def server_requests_with_limit() -> list:
    return [r for r in _last_server[0].requests if "$limit" in r.params]


def test_overlapping_ranges_give_the_union() -> None:
    assert cli("bnt", "run", "--start-date", day(0), "--stop-date", day(4)).exit_code == 0
    assert cli("bnt", "run", "--start-date", day(2), "--stop-date", day(6)).exit_code == 0
    rows = table_rows()
    assert len(rows) == 6 * ROWS_PER_DAY
    keys = {(r["plaza_id"], r["date"], r["hour"], r["direction"]) for r in rows}
    assert len(keys) == len(rows)


def test_incremental_run_starts_from_high_water_mark() -> None:
    empty = cli("bnt", "run")
    assert empty.exit_code == 2
    assert "is empty: give --start-date" in empty.output
    assert cli("bnt", "run", "--start-date", day(0), "--stop-date", day(10)).exit_code == 0
    result = cli("bnt", "run", "--lookback-days", "3")
    assert result.exit_code == 0, result.output
    hwm = FIRST_DAY + timedelta(days=9)
    expected_start = hwm - timedelta(days=3)
    assert f"[{expected_start}, {TODAY + timedelta(days=1)})" in result.output
    assert len(table_rows()) == 31 * ROWS_PER_DAY
    table = tables.load_catalog(get_settings()).load_table(bnt.TABLE)
    assert table.current_snapshot().summary["civiclake.range"] == (
        f"{expected_start}/{TODAY + timedelta(days=1)}"
    )


def test_rate_limits_and_truncated_pages_are_survived(server: SocrataServer) -> None:
    server.inject(Fault.RATE_LIMIT, times=1, retry_after=1, only="count")
    server.inject(Fault.TRUNCATED, times=1, only="data")
    server.inject(Fault.SERVER_ERROR, times=1, only="data")
    result = cli("bnt", "run", "--start-date", day(5), "--stop-date", day(7))
    assert result.exit_code == 0, result.output
    assert len(table_rows()) == 2 * ROWS_PER_DAY
    assert sorted(r.status for r in server.requests if r.status != 200) == [429, 500]


def test_retries_exhausted_fail_in_one_line_and_commit_nothing(server: SocrataServer) -> None:
    assert cli("bnt", "run", "--start-date", day(0), "--stop-date", day(2)).exit_code == 0
    before = snapshot_id()
    server.inject(Fault.SERVER_ERROR, times=1000, only="data")
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(5))
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: GET ") and last.endswith("failed after 4 attempts: HTTP 500")
    assert snapshot_id() == before
    assert len(table_rows()) == 2 * ROWS_PER_DAY


def test_persistent_count_mismatch_fails_the_run(server: SocrataServer) -> None:
    server.set_count_offset(7)
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(1))
    assert result.exit_code == 1
    assert "incomplete fetch" in result.output and "portal counts 490" in result.output
    assert snapshot_id() is None


def test_a_short_page_is_refetched(server: SocrataServer) -> None:
    server.drop_rows_once(5)
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(1))
    assert result.exit_code == 0, result.output
    assert len(table_rows()) == ROWS_PER_DAY


def test_unknown_dataset_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, server: SocrataServer
) -> None:
    monkeypatch.setenv("CIVICLAKE_BNT_DATASET_ID", "abcd-1234")
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(1))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"error: Socrata dataset 'abcd-1234' not found at {server.url} (HTTP 404)"
    )


def test_app_token_is_sent_but_never_printed(
    monkeypatch: pytest.MonkeyPatch, server: SocrataServer, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCRATA_APP_TOKEN", "very-secret-app-token")
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(1))
    assert result.exit_code == 0, result.output
    assert all(r.headers.get("x-app-token") == "very-secret-app-token" for r in server.requests)
    captured = capfd.readouterr()
    for text in (result.output, captured.out, captured.err):
        assert "very-secret-app-token" not in text


def test_from_file_csv_then_api_and_rerun(tmp_path: Path) -> None:
    result = cli("bnt", "run", "--from-file", str(SAMPLE_CSV))
    assert result.exit_code == 0, result.output
    rows = table_rows()
    assert len(rows) == 14 * ROWS_PER_DAY
    assert len(table_rows(bnt.REJECTS_TABLE)) == 4
    assert cli("bnt", "run", "--from-file", str(SAMPLE_CSV)).exit_code == 0
    assert content(table_rows()) == content(rows)
    assert len(table_rows(bnt.REJECTS_TABLE)) == 4


def test_from_file_json_export(tmp_path: Path) -> None:
    records = bnt_rows(date(2019, 12, 30), 3)
    for r in records[:10]:
        r["vehicles_cash"] = r.pop("vehicles_vtoll")
    records[20]["hour"] = "-1"
    export = tmp_path / "export.json"
    export.write_text(json.dumps(records))
    result = cli("bnt", "run", "--from-file", str(export))
    assert result.exit_code == 0, result.output
    rows = table_rows()
    assert len(rows) == 3 * ROWS_PER_DAY - 1
    assert {r["date"].year for r in rows} == {2019, 2020}
    assert len(table_rows(bnt.REJECTS_TABLE)) == 1


def test_from_file_missing_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("bnt", "run", "--from-file", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2  # bad input, refused before Prefect starts (issue 18)
    assert result.output.strip().splitlines() == [
        f"error: --from-file {tmp_path}/nope.csv: no such file"
    ]


@pytest.mark.parametrize("to", ["duckdb", "postgres"])
def test_into_a_warehouse_replaces_the_range(
    to: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bnt run --to``: the warehouse gets the same rows as Iceberg, a range at a time."""
    from civiclake.warehouse import open_warehouse

    if to == "postgres":  # one server for the session: start from an empty table
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", url)
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS mta.bnt_traffic_hourly")
            conn.execute("DROP TABLE IF EXISTS mta.bnt_traffic_hourly_rejects")
    first = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(3), "--to", to)
    assert first.exit_code == 0, first.output
    assert "warehouse rows" in first.output and "1,440" in first.output

    def warehouse_state() -> tuple[int, int, int]:
        with open_warehouse(to, get_settings()) as warehouse:
            inside = f"date >= '{day(0)}' AND date < '{day(6)}'"
            return (
                warehouse.count("mta.bnt_traffic_hourly", inside),
                warehouse.count("mta.bnt_traffic_hourly", f"{inside} AND direction = 'I'"),
                warehouse.count("mta.bnt_traffic_hourly", f"date = '{day(0)}'"),
            )

    iceberg = table_rows()
    assert warehouse_state() == (
        len(iceberg),
        sum(r["direction"] == "I" for r in iceberg),
        sum(r["date"].isoformat() == day(0) for r in iceberg),
    )
    # an overlapping range: the union, each row once; a re-run changes nothing
    assert (
        cli("bnt", "run", "--start-date", day(2), "--stop-date", day(6), "--to", to).exit_code == 0
    )
    assert warehouse_state()[0] == 6 * ROWS_PER_DAY
    assert (
        cli("bnt", "run", "--start-date", day(2), "--stop-date", day(6), "--to", to).exit_code == 0
    )
    assert warehouse_state()[0] == 6 * ROWS_PER_DAY == len(table_rows())
    # the rejects reach the warehouse too (the three bad rows of the first day), once each
    assert (
        cli("bnt", "run", "--start-date", day(0), "--stop-date", day(3), "--to", to).exit_code == 0
    )
    with open_warehouse(to, get_settings()) as warehouse:
        assert warehouse.count(bnt.REJECTS_TABLE) == 3
        assert warehouse.count(bnt.REJECTS_TABLE, "reason LIKE '%hour%'") == 1


def test_to_postgres_without_its_url_is_refused_before_anything_runs(
    civiclake_home: Path,
) -> None:
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(3), "--to", "postgres")
    assert result.exit_code == 2
    assert "--to postgres needs CIVICLAKE_POSTGRES_URL" in result.output
    assert not (civiclake_home / "lake").exists()


def test_an_unknown_engine_is_refused_before_anything_runs(
    civiclake_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_ENGINE", "nope")
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(3))
    assert result.exit_code == 2
    assert "unknown engine 'nope' (engines: arrow, spark)" in result.output
    assert not (civiclake_home / "lake").exists()


def raw_pages(civiclake_home: Path) -> list[Path]:
    return sorted(p for p in (civiclake_home / "lake" / "raw").rglob("*.json") if p.is_file())


def test_the_fetch_the_command_began_is_taken_over_not_repeated(
    server: SocrataServer, civiclake_home: Path
) -> None:
    """``bnt run`` starts its fetch before Prefect is imported; the flow continues it."""
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(5))
    assert result.exit_code == 0, result.output
    assert len(table_rows()) == 5 * ROWS_PER_DAY
    counts = [r for r in server.requests if r.params.get("$select") == "count(*)"]
    assert len(counts) == 1
    assert len(server_requests_with_limit()) == 2  # 2,403 rows in pages of 2,000, each once
    pages = raw_pages(civiclake_home)
    assert len(pages) == 2 and all(p.parent.name.startswith("run=cli-") for p in pages)


def test_a_fetch_begun_for_another_range_is_given_up_and_its_pages_removed(
    server: SocrataServer, civiclake_home: Path
) -> None:
    from civiclake._private import head_start
    from civiclake.flows.bnt import bnt_hourly_traffic
    from civiclake.sources import bnt_fetch

    settings = get_settings()
    bnt_fetch.fetch_ahead(
        settings,
        start_date=FIRST_DAY,
        stop_date=FIRST_DAY + timedelta(days=2),
        lookback_days=None,
        page_size=None,
    )
    try:
        bnt_hourly_traffic(
            start_date=FIRST_DAY + timedelta(days=3), stop_date=FIRST_DAY + timedelta(days=5)
        )
    finally:
        head_start.cancel_all()
    assert {r["date"] for r in table_rows()} == {FIRST_DAY + timedelta(days=d) for d in (3, 4)}
    assert not any(p.parent.name.startswith("run=cli-") for p in raw_pages(civiclake_home))


def test_a_fetch_the_run_never_took_is_stopped_and_removed(
    server: SocrataServer, civiclake_home: Path
) -> None:
    from civiclake._private import head_start
    from civiclake.sources import bnt_fetch

    server.inject(Fault.SLOW, times=1, delay=2.0, only="data")  # the second page waits
    bnt_fetch.fetch_ahead(
        get_settings(),
        start_date=FIRST_DAY,
        stop_date=FIRST_DAY + timedelta(days=10),
        lookback_days=None,
        page_size=None,
    )
    head_start.cancel_all()  # the command ended (e.g. failed) before its flow took it
    assert raw_pages(civiclake_home) == []
    fetching = ("civiclake-fetch-ahead", "civiclake-fetch")
    assert not any(t.name in fetching and t.is_alive() for t in threading.enumerate())


def test_a_dead_warehouse_fails_before_any_request_to_the_portal(
    server: SocrataServer, civiclake_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--to`` starts no fetch before the flow has checked the warehouse."""
    import socket

    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", f"postgresql://u:p@127.0.0.1:{port}/db")
    result = cli("bnt", "run", "--start-date", day(0), "--stop-date", day(2), "--to", "postgres")
    assert result.exit_code == 1, result.output
    assert "--to postgres" in result.output
    assert [r for r in server.requests if "$limit" in r.params or "$select" in r.params] == []
    assert raw_pages(civiclake_home) == []
