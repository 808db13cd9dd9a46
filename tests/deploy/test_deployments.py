"""prefect.yaml's deployments as a user runs them: `civiclake deploy`, a process worker,
`prefect deployment run`, blocks holding secrets, and the run in the Prefect UI in a browser.

Everything goes through real processes (server, worker, flow-run subprocesses, the CLIs) on
127.0.0.1; only the data sources are local stand-ins (Socrata replay server, a file mirror).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import pytest
from deploy_support import (
    FIRST_DAY,
    ROOT,
    ROWS_PER_DAY,
    TLC_FILE,
    Worker,
    prefect_cli,
    run_deploy,
)

from civiclake import tables
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.testing.socrata import RequestRecord, SocrataServer
from testsupport.browser import CHROMIUM, chromium_page
from testsupport.prefect_server import PrefectServer

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from testsupport.postgres import PostgresServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

BNT = "bnt-hourly-traffic/daily"
TLC = "tlc-taxi-trips/monthly"
RUN_TIMEOUT = 180.0
LAKE_TOKEN = "s3cret-lake-token"
PG_PASSWORD = "s3cret-pg-password"
APP_TOKEN = "s3cret-app-token"
SECRETS = (LAKE_TOKEN, PG_PASSWORD, APP_TOKEN)
SCREENSHOTS = ROOT / "test-artifacts"


def day(offset: int) -> str:
    return (FIRST_DAY + timedelta(days=offset)).isoformat()


def one_line(text: str) -> str:
    """CLI output with its line wrapping undone."""
    return " ".join(text.split())


def deployment_run(
    env: dict[str, str], name: str, *params: str
) -> subprocess.CompletedProcess[str]:
    """The documented command: `prefect deployment run NAME -p key=value ...`."""
    args = ["deployment", "run", name]
    for param in params:
        args += ["-p", param]
    return prefect_cli(env, *args)


def trigger(env: dict[str, str], name: str, *params: str) -> UUID:
    done = deployment_run(env, name, *params)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout
    return UUID(found.group(1))


def wait_final(worker: Worker, flow_run_id: UUID, timeout: float = RUN_TIMEOUT) -> FlowRun:
    """Poll the flow run until it reaches a final state (fails at once if the worker died)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if worker.process.poll() is not None:
                pytest.fail(f"the worker exited ({worker.process.returncode}) before the run ended")
            if time.monotonic() > deadline:
                state = run.state.name if run.state else "no state"
                pytest.fail(f"flow run {flow_run_id} still {state} after {timeout:.0f} s")
            time.sleep(1.0)


def assert_completed(run: FlowRun) -> None:
    assert run.state is not None
    assert run.state.is_completed(), f"{run.name}: {run.state.name}: {run.state.message}"


def run_artifacts(flow_run_id: UUID | None = None) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifact_filter = None
    if flow_run_id is not None:
        artifact_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        return list(client.read_artifacts(artifact_filter=artifact_filter))


def run_logs(flow_run_id: UUID | None = None) -> list[str]:
    """Log messages of one flow run, or every log the server has (paged)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    log_filter = LogFilter()
    if flow_run_id is not None:
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(log_filter=log_filter, limit=200, offset=len(messages))
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages


def assert_no_secrets(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} found in {where}"


def bnt_table_rows(settings_overrides: dict[str, Any]) -> list[dict[str, Any]]:
    catalog = tables.load_catalog(get_settings(**settings_overrides))
    return catalog.load_table(bnt.TABLE).scan().to_arrow().to_pylist()


# -- fixtures ------------------------------------------------------------------------------


@dataclass
class BntRun:
    flow_run: FlowRun
    dates: list[date]
    rows: int


@pytest.fixture(scope="module")
def bnt_run(live_prefect: PrefectServer, worker: Worker, socrata: SocrataServer) -> BntRun:
    """bnt-hourly-traffic/daily over [day 0, day 2), run by the worker; the table right after."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: live_prefect.api_url}):
        flow_run_id = trigger(
            worker.env, BNT, f"start_date={day(0)}", f"stop_date={day(2)}", "page_size=500"
        )
        run = wait_final(worker, flow_run_id)
    # read now: later tests load the same table with other parameters
    rows = bnt_table_rows({"home": worker.home, "lake_url": None, "catalog_uri": None})
    return BntRun(run, sorted({r["date"] for r in rows}), len(rows))


@dataclass
class Blocks:
    lake: str
    lake_url: str
    warehouse: str
    token: str
    document_ids: list[UUID]
    pg_host: str
    pg_port: int
    pg_database: str
    pg_user: str


@pytest.fixture(scope="module")
def blocks(
    live_prefect: PrefectServer,
    deployed: subprocess.CompletedProcess[str],
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Blocks:
    """The three blocks a deployment names: a lake, a PostgreSQL warehouse, the app token.

    The warehouse gets its own role and database on the session's PostgreSQL, so the password
    is one this test knows and other tests' tables stay apart.
    """
    import psycopg
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from civiclake.blocks import LakeBlock, PostgresWarehouseBlock

    registered = prefect_cli(live_prefect.env(), "block", "register", "-m", "civiclake.blocks")
    assert registered.returncode == 0, registered.stdout + registered.stderr

    server = urlsplit(postgres_server.url)
    assert server.hostname and server.port
    user, database = "civiclake_deploy", "civiclake_deploy"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{PG_PASSWORD}'")
        conn.execute(f"CREATE DATABASE {database} OWNER {user}")

    lake_url = tmp_path_factory.mktemp("block-lake").as_uri()
    with temporary_settings(updates={PREFECT_API_URL: live_prefect.api_url}):
        ids = [
            LakeBlock(url=lake_url, credentials={"token": LAKE_TOKEN}).save(
                "deploy-lake", overwrite=True
            ),
            PostgresWarehouseBlock(
                host=server.hostname,
                port=server.port,
                database=database,
                user=user,
                password=PG_PASSWORD,
            ).save("deploy-warehouse", overwrite=True),
            Secret(value=APP_TOKEN).save("deploy-socrata-token", overwrite=True),
        ]
    return Blocks(
        lake="deploy-lake",
        lake_url=lake_url,
        warehouse="deploy-warehouse",
        token="deploy-socrata-token",
        document_ids=ids,
        pg_host=server.hostname,
        pg_port=server.port,
        pg_database=database,
        pg_user=user,
    )


# -- civiclake deploy ------------------------------------------------------------------------


def test_deploy_registers_both_deployments_idempotently(
    live_prefect: PrefectServer, deployed: subprocess.CompletedProcess[str]
) -> None:
    from prefect.client.orchestration import get_client

    def read() -> dict[str, Any]:
        with get_client(sync_client=True) as client:
            found = {}
            for name in (BNT, TLC):
                deployment = client.read_deployment_by_name(name)
                found[name] = deployment
            pool = client.read_work_pool("civiclake")
        assert pool.type == "process"
        return found

    first = read()
    again = run_deploy(live_prefect)  # a second time: same deployments, no error
    assert again.returncode == 0, again.stdout + again.stderr
    assert "work pool 'civiclake' exists" in again.stderr
    second = read()

    for name, deployment in second.items():
        assert deployment.id == first[name].id, f"{name} was re-created, not updated"
        assert deployment.work_pool_name == "civiclake"
        assert deployment.enforce_parameter_schema is True
        assert len(deployment.schedules) == 1, deployment.schedules
        assert deployment.schedules[0].active
    assert second[BNT].schedules[0].schedule.cron == "15 7 * * *"
    assert second[TLC].schedules[0].schedule.cron == "0 9 5 * *"
    assert second[BNT].parameters == {"lookback_days": 7}
    assert second[TLC].parameters == {"color": "green", "to": "duckdb"}
    with get_client(sync_client=True) as client:
        slugs = {t.slug for t in client.read_block_types()}
    assert {"civiclake-lake", "civiclake-postgres"} <= slugs


# -- a run through the worker ------------------------------------------------------------------


def test_bnt_deployment_run_loads_the_table(
    bnt_run: BntRun, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_completed(bnt_run.flow_run)
    assert bnt_run.rows == 2 * ROWS_PER_DAY
    assert bnt_run.dates == [FIRST_DAY, FIRST_DAY + timedelta(days=1)]

    monkeypatch.setenv("CIVICLAKE_HOME", str(worker.home))
    assert (worker.home / "lake" / "warehouse").is_dir()  # the worker's runs wrote here

    artifacts = [a for a in run_artifacts(bnt_run.flow_run.id) if a.key == "bnt-load-summary"]
    assert len(artifacts) == 1
    summary = str(artifacts[0].data)
    assert f"[{day(0)}, {day(2)})" in summary
    assert "| rows_loaded | 960 |" in summary


# -- parameters the server refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "param", "expected"),
    [
        (BNT, "start_date=garbage", ["start_date", "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"]),
        (TLC, "color=purple", ["color", "'purple' is not one of"]),
        (TLC, "months=[13]", ["months", "greater than the maximum of 12"]),
    ],
)
def test_bad_parameters_are_rejected_before_a_run(
    live_prefect: PrefectServer,
    deployed: subprocess.CompletedProcess[str],
    name: str,
    param: str,
    expected: list[str],
) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        before = client.count_flow_runs()
    done = deployment_run(live_prefect.env(), name, param)
    output = one_line(done.stdout + done.stderr)
    assert done.returncode != 0, output
    for text in expected:
        assert text in output, output
    with get_client(sync_client=True) as client:
        assert client.count_flow_runs() == before  # nothing was created


# -- blocks -----------------------------------------------------------------------------------


def test_blocks_round_trip(blocks: Blocks) -> None:
    from prefect.blocks.system import Secret

    from civiclake.blocks import LakeBlock, PostgresWarehouseBlock

    lake = LakeBlock.load(blocks.lake)
    assert lake.url == blocks.lake_url
    assert lake.credentials.get_secret_value() == {"token": LAKE_TOKEN}
    warehouse = PostgresWarehouseBlock.load(blocks.warehouse)
    assert (warehouse.host, warehouse.port, warehouse.database, warehouse.user) == (
        blocks.pg_host,
        blocks.pg_port,
        blocks.pg_database,
        blocks.pg_user,
    )
    assert warehouse.password.get_secret_value() == PG_PASSWORD
    assert PG_PASSWORD not in str(warehouse.url()) and PG_PASSWORD not in repr(warehouse)
    assert Secret.load(blocks.token).get() == APP_TOKEN


@dataclass
class BlockRun:
    flow_run: FlowRun
    requests: list[RequestRecord]


@pytest.fixture(scope="module")
def block_run(
    live_prefect: PrefectServer,
    worker: Worker,
    socrata: SocrataServer,
    blocks: Blocks,
    bnt_run: BntRun,
) -> BlockRun:
    """bnt-hourly-traffic/daily over [day 2, day 4) naming the lake and token blocks."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The catalog lives in CIVICLAKE_HOME and an Iceberg table keeps the location it was created
    # with: forget the tables the default-lake run created so this run creates them in the
    # block's lake (their files stay; only the catalog entries go).
    catalog = tables.load_catalog(get_settings(home=worker.home, lake_url=None, catalog_uri=None))
    for name in (bnt.TABLE, bnt.REJECTS_TABLE):
        if catalog.table_exists(name):
            catalog.drop_table(name)
    socrata.requests.clear()
    with temporary_settings(updates={PREFECT_API_URL: live_prefect.api_url}):
        flow_run_id = trigger(
            worker.env,
            BNT,
            f"start_date={day(2)}",
            f"stop_date={day(4)}",
            f"lake_block={blocks.lake}",
            f"socrata_token_block={blocks.token}",
        )
        run = wait_final(worker, flow_run_id)
    return BlockRun(run, list(socrata.requests))


def test_deployment_run_with_blocks_uses_the_lake_and_token(
    worker: Worker, blocks: Blocks, block_run: BlockRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_completed(block_run.flow_run)
    assert block_run.flow_run.parameters["lake_block"] == blocks.lake  # a name, not the value

    # the table is in the block's lake (<lake>/warehouse), and so is the raw zone
    monkeypatch.setenv("CIVICLAKE_HOME", str(worker.home))
    # each lake has its own tables in the embedded catalog: the default lake has none
    assert not tables.load_catalog(get_settings()).table_exists(bnt.TABLE)
    table = tables.load_catalog(get_settings(lake_url=blocks.lake_url)).load_table(bnt.TABLE)
    assert table.metadata_location.startswith(f"{blocks.lake_url}/warehouse/")
    rows = table.scan().to_arrow().to_pylist()
    assert len(rows) == 2 * ROWS_PER_DAY
    assert {r["date"] for r in rows} == {FIRST_DAY + timedelta(days=d) for d in (2, 3)}
    lake_dir = Path(urlsplit(blocks.lake_url).path)
    assert any(p.is_file() for p in (lake_dir / "raw").rglob("*"))
    assert any((lake_dir / "warehouse").rglob("*.parquet"))

    # the token went to the API, from the Secret block
    data_requests = [r for r in block_run.requests if r.path.startswith("/resource/")]
    assert data_requests
    assert {r.headers.get("x-app-token") for r in data_requests} == {APP_TOKEN}


def test_deployment_run_with_blocks_stages_in_the_block_lake(
    worker: Worker, blocks: Blocks, block_run: BlockRun
) -> None:
    assert_completed(block_run.flow_run)
    run_dir = f"run={block_run.flow_run.id}"
    in_default_lake = list((worker.home / "lake" / "stage").rglob(run_dir))
    in_block_lake = list((Path(urlsplit(blocks.lake_url).path) / "stage").rglob(run_dir))
    assert not in_default_lake, f"staged outside the block's lake: {in_default_lake}"
    assert in_block_lake


def test_deployment_run_with_blocks_keeps_secrets_out(
    live_prefect: PrefectServer, worker: Worker, blocks: Blocks, block_run: BlockRun
) -> None:
    assert_completed(block_run.flow_run)
    assert_secrets_nowhere(live_prefect, worker, blocks, block_run.flow_run.id)


def assert_secrets_nowhere(
    server: PrefectServer, worker: Worker, blocks: Blocks, flow_run_id: UUID
) -> None:
    """Not in the worker's output, the run's logs, any log or artifact, the block documents."""
    assert_no_secrets("the worker log", worker.log())
    # logs travel in batches: the run's last lines can land just after its final state
    deadline = time.monotonic() + 20
    while True:
        run_messages = run_logs(flow_run_id)
        if any("Finished in state" in m for m in run_messages) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert run_messages, "the flow run sent no logs"
    assert_no_secrets("the flow run's logs", "\n".join(run_messages))
    assert_no_secrets("the server's logs", "\n".join(run_logs()))
    artifacts = run_artifacts()
    assert artifacts
    assert_no_secrets("the artifacts", json.dumps([a.model_dump(mode="json") for a in artifacts]))
    with httpx.Client(base_url=server.api_url, timeout=10) as http:
        for document_id in blocks.document_ids:
            answer = http.get(f"/block_documents/{document_id}")
            assert answer.status_code == 200, answer.text
            assert_no_secrets(f"block document {document_id}", answer.text)
            assert "********" in answer.text, answer.text


@pytest.mark.skipif(not TLC_FILE.is_file(), reason=f"{TLC_FILE} is not on this machine")
def test_tlc_deployment_into_postgres_with_the_warehouse_block(
    live_prefect: PrefectServer,
    worker: Worker,
    blocks: Blocks,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    flow_run_id = trigger(
        worker.env,
        TLC,
        "color=green",
        "year=2020",
        "months=[10]",
        "to=postgres",
        f"warehouse_block={blocks.warehouse}",
    )
    run = wait_final(worker, flow_run_id)
    assert_completed(run)

    monkeypatch.setenv("CIVICLAKE_HOME", str(worker.home))
    iceberg_rows = tables.load_catalog(get_settings()).load_table("tlc.green_trips").scan().count()
    with psycopg.connect(
        host=blocks.pg_host,
        port=blocks.pg_port,
        dbname=blocks.pg_database,
        user=blocks.pg_user,
        password=PG_PASSWORD,
    ) as conn:
        (pg_rows,) = conn.execute("SELECT count(*) FROM tlc.green_trips").fetchone() or (0,)
    assert pg_rows > 90_000
    assert pg_rows == iceberg_rows
    assert_secrets_nowhere(live_prefect, worker, blocks, flow_run_id)


# -- the Prefect UI in a real browser -----------------------------------------------------------


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: scripts/test installs Debian's chromium "
            "(apt-get install -y chromium)"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright package (dev extra) is not installed"
    )
    with chromium_page(tmp_path / "chromium-profile", width=1400) as page:
        yield page


def test_completed_run_and_its_summary_in_the_prefect_ui(
    live_prefect: PrefectServer, bnt_run: BntRun, browser_page: Any
) -> None:
    assert_completed(bnt_run.flow_run)
    page = browser_page
    SCREENSHOTS.mkdir(exist_ok=True)
    timeout_ms = 60_000

    page.goto(f"{live_prefect.ui_url}/runs/flow-run/{bnt_run.flow_run.id}")
    page.get_by_text(bnt_run.flow_run.name).first.wait_for(timeout=timeout_ms)
    page.get_by_text("Completed").first.wait_for(timeout=timeout_ms)
    page.screenshot(path=str(SCREENSHOTS / "prefect-ui-flow-run.png"), full_page=True)
    page.get_by_text("Artifacts", exact=True).first.click()  # the run's Artifacts tab
    page.get_by_text("bnt-load-summary").first.wait_for(timeout=timeout_ms)

    (artifact,) = [a for a in run_artifacts(bnt_run.flow_run.id) if a.key == "bnt-load-summary"]
    page.goto(f"{live_prefect.ui_url}/artifacts/artifact/{artifact.id}")
    page.get_by_text("rows_loaded").first.wait_for(timeout=timeout_ms)
    assert page.get_by_text(f"[{day(0)}, {day(2)})").count() >= 1
    page.screenshot(path=str(SCREENSHOTS / "prefect-ui-artifact.png"), full_page=True)


def test_run_artifact_chart_renders_offline_in_the_prefect_ui(
    live_prefect: PrefectServer, bnt_run: BntRun, tmp_path: Path
) -> None:
    """The load figures (issue 13): the inline SVG chart is drawn, nothing leaves the server."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from testsupport.browser import chromium_page, guard

    (artifact,) = [a for a in run_artifacts(bnt_run.flow_run.id) if a.key == "bnt-load-summary"]
    SCREENSHOTS.mkdir(exist_ok=True)
    with chromium_page(tmp_path / "profile") as page:
        seen = guard(page, allow=(live_prefect.ui_url + "/", "data:", "blob:"))
        page.goto(f"{live_prefect.ui_url}/artifacts/artifact/{artifact.id}")
        image = page.locator('img[alt="vehicles per day"]')
        image.wait_for(timeout=60_000)
        page.wait_for_function(
            "() => [...document.images].some(i => i.alt === 'vehicles per day' && i.complete"
            " && i.naturalWidth > 0)",
            timeout=30_000,
        )
        page.get_by_text("What this run loaded").first.wait_for(timeout=10_000)
        page.screenshot(path=str(SCREENSHOTS / "prefect-ui-artifact-figures.png"), full_page=True)
        assert image.bounding_box()["height"] > 100
        assert seen.blocked == [], seen.blocked
        assert seen.console_errors == [], seen.console_errors
