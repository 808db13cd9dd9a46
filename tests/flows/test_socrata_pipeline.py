"""The Socrata flow on the one pipeline: a run killed between its fetch and its commit is
finished by the next run from the raw zone (the replay server's request log proves no page is
fetched again), never when the portal's rows changed since or cannot say; and tables written by
the code before the reshape (the wheel in tests/fixtures) keep loading."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.testing.socrata import Fault, RequestRecord, SocrataServer, tabular_view
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_row, sample_rows
from testsupport.old_civiclake import run_old_cli

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

TABLE = "socrata.abcd_1234"
REJECTS = "socrata.abcd_1234_rejects"
ROWS = 25


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocrataServer]:
    srv = SocrataServer()
    rows = sample_rows(ROWS)
    rows[7] = {**rows[7], "count": "seven"}  # a reject
    srv.add_dataset(DATASET, rows, columns=COLUMNS, name="Every type")
    with srv:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", srv.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "10")
        yield srv


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def rows_of(name: str = TABLE) -> list[dict[str, Any]]:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow().to_pylist()


def page_requests(records: list[RequestRecord]) -> list[RequestRecord]:
    """Data pages (not metadata, not count(*))."""
    return [r for r in records if r.path.startswith("/resource/") and "$offset" in r.params]


def killed_after_fetch(monkeypatch: pytest.MonkeyPatch) -> Result:
    """``socrata run`` dying after its fetch and stage, before anything is committed."""
    from civiclake.pipeline import commit as pipeline_commit

    def killed(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed after the fetch, before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline_commit, "commit", killed)
        result = cli("socrata", "run", DATASET)
    assert result.exit_code != 0, result.output
    assert tables.load_catalog(get_settings()).load_table(TABLE).current_snapshot() is None
    return result


def test_a_run_killed_before_its_commit_is_finished_from_the_raw_zone(
    server: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_after_fetch(monkeypatch)
    fetched = len(page_requests(server.requests))
    assert fetched == 3  # 25 rows, pages of 10

    seen = len(server.requests)
    again = cli("socrata", "run", DATASET)  # the same parameters
    assert again.exit_code == 0, again.output
    assert page_requests(server.requests[seen:]) == []  # no page fetched again
    rows = rows_of()
    assert len(rows) == ROWS - 1
    assert max(Counter(r["socrata_id"] for r in rows).values()) == 1
    assert [r["socrata_id"] for r in rows_of(REJECTS)] == ["row-00007"]
    props = tables.load_catalog(get_settings()).load_table(TABLE).current_snapshot().summary
    assert props["civiclake.high-water-mark"] == "2024-03-01T12:24:00+00:00"

    # committed: the next run plans from the new snapshot (incremental), a fetch of its own
    seen = len(server.requests)
    assert cli("socrata", "run", DATASET).exit_code == 0
    assert page_requests(server.requests[seen:])


def test_rows_changed_at_the_source_since_the_fetch_are_fetched_again(
    server: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_after_fetch(monkeypatch)
    rows = sample_rows(ROWS)
    rows[3] = {**sample_row(3, minutes=600), "zip": "NEW03"}
    server.add_dataset(DATASET, rows, columns=COLUMNS)  # the portal's rowsUpdatedAt moves on
    seen = len(server.requests)
    again = cli("socrata", "run", DATASET)
    assert again.exit_code == 0, again.output
    assert len(page_requests(server.requests[seen:])) == 3
    loaded = {r["socrata_id"]: r for r in rows_of()}
    assert len(loaded) == ROWS and loaded["row-00003"]["zip"] == "NEW03"


def test_metadata_without_rows_updated_at_means_a_fetch(
    server: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add_view(DATASET, tabular_view(DATASET, COLUMNS, "Every type", ROWS))
    killed_after_fetch(monkeypatch)
    seen = len(server.requests)
    assert cli("socrata", "run", DATASET).exit_code == 0
    assert len(page_requests(server.requests[seen:])) == 3
    assert len(rows_of()) == ROWS - 1


def old_cli(tmp_path: Path, server: SocrataServer, *args: str) -> subprocess.CompletedProcess[str]:
    """civiclake as built before the one-pipeline reshape, on the same home and portal."""
    done = run_old_cli(tmp_path, *args, env={"CIVICLAKE_SOCRATA_URL": server.url})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_tables_written_by_the_old_code_keep_loading(server: SocrataServer, tmp_path: Path) -> None:
    old_cli(tmp_path, server, "socrata", "run", DATASET)
    lake = get_settings().lake()
    assert lake.list(lake.join("stage", "socrata", DATASET))  # the old code's stage Parquet
    catalog = tables.load_catalog(get_settings())
    old_snapshot = catalog.load_table(TABLE).current_snapshot()
    assert len(rows_of()) == ROWS - 1 and len(rows_of(REJECTS)) == 1
    hwm = old_snapshot.summary["civiclake.high-water-mark"]

    # nothing new: the old table's high-water mark is read, nothing committed
    again = cli("socrata", "run", DATASET)
    assert again.exit_code == 0, again.output
    assert "unchanged (nothing committed)" in " ".join(again.output.split())
    assert f"updated since {hwm}" in " ".join(again.output.split())
    table = tables.load_catalog(get_settings()).load_table(TABLE)
    assert table.current_snapshot().snapshot_id == old_snapshot.snapshot_id

    # a revised row and a fixed reject: merged by id into the old table, no duplicates
    rows = sample_rows(ROWS)
    rows[2] = {**sample_row(2, minutes=600), "zip": "NEW02"}
    rows[7] = sample_row(7, minutes=601)
    server.add_dataset(DATASET, rows, columns=COLUMNS)
    merged = cli("socrata", "run", DATASET)
    assert merged.exit_code == 0, merged.output
    loaded = {r["socrata_id"]: r for r in rows_of()}
    assert len(rows_of()) == len(loaded) == ROWS
    assert loaded["row-00002"]["zip"] == "NEW02" and loaded["row-00007"]["count"] is not None
    assert rows_of(REJECTS) == []
    # and a full refresh of it
    full = cli("socrata", "run", DATASET, "--full")
    assert full.exit_code == 0, full.output
    assert sorted(r["socrata_id"] for r in rows_of()) == sorted(loaded)


def test_an_unknown_engine_is_refused_before_any_page(
    server: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_ENGINE", "ray")
    result = cli("socrata", "run", DATASET)
    assert result.exit_code == 2, result.output
    assert "unknown engine 'ray'" in result.output
    assert page_requests(server.requests) == []
    assert not tables.load_catalog(get_settings()).table_exists(TABLE)


def test_a_first_run_sigkilled_before_its_commit_leaves_no_phantom_table(
    server: SocrataServer,
) -> None:
    """SIGKILL (nothing of the run's own cleanup runs) after the first run created its tables:
    they stay in the catalog with no snapshot; they are not listed, and the next run, with
    another partitioning, is a first full load into a table made anew."""
    import os
    import signal
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from civiclake.report import list_identifiers

    server.inject(Fault.SLOW, times=1, delay=120.0, only="data")  # the fetch hangs there
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "CIVICLAKE_HTTP_TIMEOUT": "300",
        "DO_NOT_TRACK": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "civiclake.cli", "socrata", "run", DATASET,
         "--partition", "month(closed_at)"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    catalog = tables.load_catalog(get_settings())
    try:
        deadline = time.monotonic() + 240
        while not (
            any("$limit" in r.params for r in server.requests)
            and catalog.table_exists(TABLE)
            and catalog.table_exists(REJECTS)
        ):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never created its tables"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    server.clear_faults()
    phantom = catalog.load_table(TABLE)
    assert phantom.current_snapshot() is None  # the state SIGKILL leaves
    assert str(phantom.spec().fields[0].transform) == "month"

    listed = cli("tables", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert TABLE not in listed.output and REJECTS not in listed.output
    assert "no tables yet" in cli("tables").output
    assert list_identifiers(catalog) == []  # no report page either

    again = cli("socrata", "run", DATASET, "--partition", "day(closed_at)")
    assert again.exit_code == 0, again.output
    assert "full" in " ".join(again.output.split())
    table = tables.load_catalog(get_settings()).load_table(TABLE)
    assert [str(f.transform) for f in table.spec().fields] == ["day"]
    assert len(table.metadata.snapshots) == 1
    assert len(rows_of()) == ROWS - 1 and [r["socrata_id"] for r in rows_of(REJECTS)] == [
        "row-00007"
    ]
    assert TABLE in cli("tables").output
