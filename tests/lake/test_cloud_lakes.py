"""Every pipeline on every cloud lake, against real emulators (Azurite, moto, the GCS
emulator) started once per session on 127.0.0.1: the MTA pipeline and a taxi month end to end,
idempotent re-runs, ``civiclake sql`` / ``tables`` / ``doctor``, and wrong credentials that fail
in one line before anything is written."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from civiclake.cli import app
from civiclake.testing.socrata import SocrataServer, bnt_rows
from testsupport.objectstores import ObjectStore, use_env

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

DATASET = "qzve-kjga"
FIRST_DAY = date(2024, 3, 1)
ROWS_PER_DAY = 480
GREEN = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "tlc"
    / "green_tripdata_2020-10.csv.gz"
)
GREEN_VALID = 94_852  # 95,120 read - 268 rejected (computed with pandas in tests/flows)


@pytest.fixture(scope="module")
def socrata() -> Iterator[SocrataServer]:
    with SocrataServer({DATASET: bnt_rows(FIRST_DAY, 10)}) as server:
        yield server


@pytest.fixture
def lake(
    store: ObjectStore,
    socrata: SocrataServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> str:
    """A fresh prefix of the store as the lake, reached with the store's standard env vars."""
    use_env(monkeypatch, tmp_path, store.env)
    url = store.lake_url(f"t-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("CIVICLAKE_LAKE_URL", url)
    monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", socrata.url)
    monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "1000")
    return url


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def sql_json(query: str) -> list[dict]:
    result = cli("sql", query, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def prefix_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1]


def test_bnt_pipeline_end_to_end_and_rerun(store: ObjectStore, lake: str) -> None:
    args = ("bnt", "run", "--start-date", "2024-03-02", "--stop-date", "2024-03-05")
    first = cli(*args)
    assert first.exit_code == 0, first.output
    expected = 3 * ROWS_PER_DAY
    counted = sql_json(
        "SELECT count(*) AS n, min(date) AS lo, max(date) AS hi FROM mta.bnt_traffic_hourly"
    )
    assert counted == [{"n": expected, "lo": "2024-03-02", "hi": "2024-03-04"}]

    # every zone lives in the store: raw pages, the stage, Iceberg data and metadata
    keys = store.list_objects(prefix_of(lake))
    for zone in (
        "/raw/",
        "/stage/",
        "/warehouse/mta/bnt_traffic_hourly/data/",
        "/warehouse/mta/bnt_traffic_hourly/metadata/",
    ):
        assert any(zone in f"/{key}" for key in keys), (zone, keys[:5])

    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert sql_json("SELECT count(*) AS n FROM mta.bnt_traffic_hourly") == [{"n": expected}]
    listed = json.loads(cli("tables", "--format", "json").stdout)
    main = next(t for t in listed if t["table"] == "mta.bnt_traffic_hourly")
    assert main["rows"] == expected
    # nothing new at the source: the re-run commits nothing (issue 17), never a duplicate
    assert main["snapshots"] == 1 and "unchanged" in again.output


def test_taxi_month_end_to_end_and_rerun(store: ObjectStore, lake: str) -> None:
    for _ in range(2):  # the second run replaces the month
        result = cli("taxi", "run", "--from-file", str(GREEN))
        assert result.exit_code == 0, result.output
        rows = sql_json(
            "SELECT count(*) AS n FROM tlc.green_trips "
            "WHERE lpep_pickup_datetime >= '2020-10-01' AND lpep_pickup_datetime < '2020-11-01'"
        )
        assert rows == [{"n": GREEN_VALID}]
    keys = store.list_objects(prefix_of(lake))
    assert any(
        k.endswith(".parquet") and "/warehouse/tlc/green_trips/data/" in f"/{k}" for k in keys
    )

    from civiclake.config import get_settings
    from civiclake.warehouse import open_warehouse

    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == GREEN_VALID


def test_doctor_reports_a_healthy_lake(store: ObjectStore, lake: str) -> None:
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    assert "ok   lake" in result.stdout and "ok   catalog" in result.stdout


def test_wrong_credentials_fail_in_one_line_and_write_nothing(
    store: ObjectStore, lake: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_env(monkeypatch, tmp_path, store.bad_env)
    runs = [
        cli("bnt", "run", "--start-date", "2024-03-02", "--stop-date", "2024-03-03"),
        cli("taxi", "run", "--from-file", str(GREEN)),
    ]
    for result in runs:
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: lake ")
        for secret in store.secrets():
            assert secret not in result.output
    doctor = cli("doctor")
    assert doctor.exit_code == 1
    assert "FAIL lake" in doctor.stdout
    # with the right credentials again: nothing was written and no table exists
    use_env(monkeypatch, tmp_path, store.env)
    assert store.list_objects(prefix_of(lake)) == []
    assert json.loads(cli("tables", "--format", "json").stdout) == []


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_lake_block_carries_the_credentials(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No cloud variable in the environment: the civiclake-lake block holds URL + secrets."""
    from civiclake.blocks import LakeBlock

    store: ObjectStore = request.getfixturevalue(f"{kind}_store")
    use_env(monkeypatch, tmp_path, {})  # nothing from the environment
    if kind == "s3":
        credentials = {
            "key": store.env["AWS_ACCESS_KEY_ID"],
            "secret": store.env["AWS_SECRET_ACCESS_KEY"],
            "endpoint_url": store.env["AWS_ENDPOINT_URL"],
            "client_kwargs": {"region_name": store.env["AWS_DEFAULT_REGION"]},
        }
    else:
        credentials = {"connection_string": store.env["AZURE_STORAGE_CONNECTION_STRING"]}
    url = store.lake_url(f"block-{uuid.uuid4().hex[:8]}")
    name = f"{kind}-lake-{uuid.uuid4().hex[:6]}"
    LakeBlock(url=url, credentials=credentials).save(name)

    sample = Path(__file__).resolve().parents[2] / "examples" / "bnt_sample.csv"
    result = cli("bnt", "run", "--from-file", str(sample), "--lake-block", name)
    assert result.exit_code == 0, result.output
    assert "6,720" in result.stdout  # the sample's valid rows
    for secret in store.secrets():
        assert secret not in result.output
    keys = store.list_objects(prefix_of(url))
    assert any("/warehouse/mta/bnt_traffic_hourly/data/" in f"/{k}" for k in keys)
