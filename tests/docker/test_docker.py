"""The flows' image and the docker work pool as a user runs them: `docker build`, `civiclake
deploy --docker`, `prefect worker start --pool civiclake-docker`, `prefect deployment run`.

Everything is real and local: a private dockerd, the image built from ./Dockerfile, a Prefect
server process, the docker worker, containers on the host network reaching the Socrata replay
server and the Prefect API on 127.0.0.1, the lake/catalog on a mounted volume.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from deploy_support import FIRST_DAY, ROOT, ROWS_PER_DAY, Worker, clean_env, prefect_cli, run_deploy
from docker_support import CONTAINER_UID, Engine, Image

from civiclake.testing.socrata import SocrataServer
from testsupport.objectstores import ObjectStore
from testsupport.prefect_server import PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

BNT = "bnt-hourly-traffic/daily-docker"
TLC = "tlc-taxi-trips/monthly-docker"
APP_TOKEN = "s3cret-docker-app-token"
TOKEN_BLOCK = "docker-socrata-token"
S3_BLOCK = "docker-s3-lake"
COUNT_BY_DATE = "SELECT date, count(*) AS n FROM mta.bnt_traffic_hourly GROUP BY date ORDER BY date"
RUN_TIMEOUT_SECONDS = 300
# where a build could have left a file (not /proc, /sys, /dev of the container)
IMAGE_DIRS = ("/etc", "/opt", "/usr", "/var", "/root", "/home", "/tmp", "/run", "/data")


def day(offset: int) -> str:
    return (FIRST_DAY + timedelta(days=offset)).isoformat()


def read_deployment(name: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


@dataclass
class DockerRun:
    flow_run: Any
    output: str
    container: dict[str, Any]
    requests: list[Any]


def run_in_container(
    server: PrefectServer,
    engine: Engine,
    worker: Worker,
    socrata: SocrataServer,
    *params: str,
    env: dict[str, str] | None = None,
) -> DockerRun:
    """`prefect deployment run` of daily-docker with the CIVICLAKE_HOME volume mounted at the
    same path; `--watch` waits for the final state, as a user would."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = str(worker.home)
    container_env = {**worker.env, "CIVICLAKE_SOCRATA_URL": socrata.url, **(env or {})}
    args = ["deployment", "run", BNT]
    for param in params:
        args += ["-p", param]
    args += ["--job-variable", "env=" + json.dumps(container_env)]
    args += ["--job-variable", "volumes=" + json.dumps([f"{home}:{home}"])]
    socrata.requests.clear()
    done = prefect_cli(
        clean_env(server), *args, "--watch", "--watch-timeout", str(RUN_TIMEOUT_SECONDS)
    )
    output = done.stdout + done.stderr
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    with (
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        flow_run = client.read_flow_run(UUID(found.group(1)))
    listed = engine.run("ps", "-a", "-q", "--filter", f"label=io.prefect.flow-run-id={flow_run.id}")
    ids = listed.stdout.split()
    assert len(ids) == 1, f"containers of the run: {listed.stdout!r} {listed.stderr}\n{output}"
    return DockerRun(flow_run, output, engine.inspect(ids[0])[0], list(socrata.requests))


def save_blocks(server: PrefectServer, *blocks: tuple[Any, str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        for block, name in blocks:
            block.save(name, overwrite=True)


@pytest.fixture(scope="module")
def docker_run(
    live_prefect: PrefectServer, engine: Engine, docker_worker: Worker, socrata: SocrataServer
) -> DockerRun:
    """[day 0, day 2) into the mounted CIVICLAKE_HOME, the app token from a Secret block."""
    from prefect.blocks.system import Secret

    save_blocks(live_prefect, (Secret(value=APP_TOKEN), TOKEN_BLOCK))
    return run_in_container(
        live_prefect,
        engine,
        docker_worker,
        socrata,
        f"start_date={day(0)}",
        f"stop_date={day(2)}",
        "page_size=500",
        f"socrata_token_block={TOKEN_BLOCK}",
    )


@dataclass
class S3Run:
    run: DockerRun
    lake_url: str
    store: ObjectStore


@pytest.fixture(scope="module")
def s3_run(
    live_prefect: PrefectServer,
    engine: Engine,
    docker_worker: Worker,
    socrata: SocrataServer,
    s3_store: ObjectStore,
) -> S3Run:
    """[day 2, day 4) into an S3 lake (moto on 127.0.0.1) named by a civiclake-lake block; only
    the embedded catalog stays on the mounted CIVICLAKE_HOME."""
    from civiclake.blocks import LakeBlock

    lake_url = s3_store.lake_url("docker-lake")
    credentials = {
        "key": s3_store.env["AWS_ACCESS_KEY_ID"],
        "secret": s3_store.env["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": s3_store.env["AWS_ENDPOINT_URL"],
        "client_kwargs": {"region_name": s3_store.env["AWS_DEFAULT_REGION"]},
    }
    save_blocks(live_prefect, (LakeBlock(url=lake_url, credentials=credentials), S3_BLOCK))
    run = run_in_container(
        live_prefect,
        engine,
        docker_worker,
        socrata,
        f"start_date={day(2)}",
        f"stop_date={day(4)}",
        f"lake_block={S3_BLOCK}",
    )
    return S3Run(run, lake_url, s3_store)


def sql(env: dict[str, str], query: str, *args: str) -> list[dict[str, Any]]:
    """`civiclake sql --format json QUERY` from the host."""
    done = subprocess.run(
        [sys.executable, "-m", "civiclake.cli", "sql", "--format", "json", *args, query],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_logs(flow_run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return [log.message for log in logs]


# -- the image ---------------------------------------------------------------------------------


def test_image_runs_civiclake_as_a_non_root_user(engine: Engine, image: Image) -> None:
    (config,) = engine.inspect("--type", "image", image.name)
    assert config["Config"]["User"] == "civiclake"
    done = engine.run(
        "run", "--rm", "--network", "host", image.name, "sh", "-c", "id -u && civiclake --help"
    )
    assert done.returncode == 0, done.stderr
    uid, _, usage = done.stdout.partition("\n")
    assert uid == str(CONTAINER_UID)
    assert "Usage: civiclake" in usage
    # the flows' entrypoints (prefect.yaml) are where the pull step looks for them
    listed = engine.run("run", "--rm", image.name, "ls", "/opt/civiclake/src/civiclake/flows")
    assert {"bnt.py", "tlc.py"} <= set(listed.stdout.split()), listed.stderr


def test_image_layers_hold_no_secret(engine: Engine, image: Image) -> None:
    """The proxy's CA was a BuildKit secret: mounted for one RUN, in no layer or setting."""
    (config,) = engine.inspect("--type", "image", image.name)
    assert not any(item.startswith(("PIP_CERT=", "SSL_CERT")) for item in config["Config"]["Env"])
    proxy_cas = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    for ca in proxy_cas:
        lines = [line for line in ca.read_text().splitlines() if "-----" not in line]
        marker = lines[len(lines) // 2]  # a line of the certificate's own base64
        found = engine.run(
            "run",
            "--rm",
            "--user",
            "0",
            image.name,
            "grep",
            "-rlsF",
            "--",
            marker,
            *IMAGE_DIRS,
            timeout=300,
        )
        assert found.returncode == 1, f"{ca.name} is in the image: {found.stdout}{found.stderr}"
    listed = engine.run("run", "--rm", image.name, "sh", "-c", "ls -A /run/secrets 2>/dev/null")
    assert listed.stdout.strip() == ""
    # the dependencies are a layer of their own, before the source
    history = engine.run("history", "--no-trunc", image.name).stdout.splitlines()
    source = next(i for i, line in enumerate(history) if "COPY src" in line)
    deps = next(i for i, line in enumerate(history) if "pip install -r" in line)
    assert source < deps  # history lists the newest layer first


# -- civiclake deploy --docker -----------------------------------------------------------------


def test_deploy_docker_creates_the_pool_and_both_deployments(
    live_prefect: PrefectServer, docker_deployed: subprocess.CompletedProcess[str]
) -> None:
    from prefect.client.orchestration import get_client

    assert "work pool 'civiclake-docker'" in docker_deployed.stderr
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("civiclake-docker")
    assert pool.type == "docker"
    template = pool.base_job_template["variables"]["properties"]
    assert {"image", "image_pull_policy", "volumes", "env"} <= set(template)
    first = {name: read_deployment(name) for name in (BNT, TLC)}
    for deployment in first.values():
        assert deployment.work_pool_name == "civiclake-docker"
        assert deployment.enforce_parameter_schema is True
        assert deployment.job_variables == {
            "image": "civiclake:latest",
            "image_pull_policy": "Never",
        }
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/civiclake"}}
        ]
    assert first[TLC].parameters == {"color": "green", "to": "duckdb"}

    # again, with another pull policy: the same deployments, updated; the pool is kept
    again = run_deploy(live_prefect, "--docker", "--pull-policy", "IfNotPresent")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "work pool 'civiclake-docker' exists" in again.stderr
    for name, deployment in first.items():
        now = read_deployment(name)
        assert now.id == deployment.id
        assert now.job_variables == {
            "image": "civiclake:latest",
            "image_pull_policy": "IfNotPresent",
        }


def test_deploy_docker_refuses_a_bad_pull_policy(live_prefect: PrefectServer) -> None:
    done = run_deploy(live_prefect, "--docker", "--pull-policy", "Sometimes")
    assert done.returncode == 2
    assert "--pull-policy: 'Sometimes' is not one of IfNotPresent, Always, Never" in done.stderr
    plain = subprocess.run(
        [sys.executable, "-m", "civiclake.cli", "deploy", "--image", "x:1"],
        cwd=ROOT,
        env=clean_env(live_prefect),
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode == 2
    assert "--image and --pull-policy go with --docker" in plain.stderr


# -- a run in a container ----------------------------------------------------------------------


def test_docker_run_completes_and_loads_the_table(
    live_prefect: PrefectServer, docker_run: DockerRun, docker_worker: Worker
) -> None:
    run = docker_run.flow_run
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{docker_run.output}"
    # the run was this container (the worker records it as the run's infrastructure)
    assert docker_run.container["Id"] in (run.infrastructure_pid or "")
    assert docker_run.container["Config"]["Image"] == "civiclake:latest"
    assert docker_run.container["HostConfig"]["NetworkMode"] == "host"

    # read from the host, through the CLI, in the lake/catalog the container wrote
    env = {**clean_env(live_prefect), "CIVICLAKE_HOME": str(docker_worker.home)}
    assert sql(env, COUNT_BY_DATE) == [
        {"date": day(0), "n": ROWS_PER_DAY},
        {"date": day(1), "n": ROWS_PER_DAY},
    ]
    owners = {p.stat().st_uid for p in (docker_worker.home / "lake").rglob("*.parquet")}
    assert owners == {CONTAINER_UID}  # written inside the container, by its non-root user


def test_docker_run_logs_reach_prefect(docker_run: DockerRun) -> None:
    messages = run_logs(docker_run.flow_run.id)
    assert any(
        m.startswith(f"loading mta.bnt_traffic_hourly for [{day(0)}, {day(2)})") for m in messages
    ), messages
    assert any(m.startswith("fetched 960 rows") for m in messages), messages
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    ours = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[docker_run.flow_run.id]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ours)
    summaries = [a for a in artifacts if a.key == "bnt-load-summary"]
    assert len(summaries) == 1
    assert "| rows_loaded | 960 |" in str(summaries[0].data)


def test_block_secret_is_used_but_never_in_the_container_or_image(
    engine: Engine, image: Image, docker_run: DockerRun
) -> None:
    data = [r for r in docker_run.requests if r.path.startswith("/resource/")]
    assert data
    assert {r.headers.get("x-app-token") for r in data} == {APP_TOKEN}  # from the block
    assert docker_run.flow_run.parameters["socrata_token_block"] == TOKEN_BLOCK
    assert APP_TOKEN not in json.dumps(docker_run.container)
    history = engine.run("history", "--no-trunc", image.name)
    assert APP_TOKEN not in history.stdout
    assert APP_TOKEN not in json.dumps(engine.inspect("--type", "image", image.name))


def test_bad_parameter_is_refused_by_the_server(
    live_prefect: PrefectServer, docker_deployed: subprocess.CompletedProcess[str]
) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        before = client.count_flow_runs()
    done = prefect_cli(clean_env(live_prefect), "deployment", "run", BNT, "-p", "stop_date=03/01")
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0, output
    assert "stop_date" in output and "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" in output, output
    with get_client(sync_client=True) as client:
        assert client.count_flow_runs() == before


def test_docker_run_into_an_s3_lake_from_a_block(
    live_prefect: PrefectServer, s3_run: S3Run, docker_worker: Worker
) -> None:
    run = s3_run.run.flow_run
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{s3_run.run.output}"
    env = {
        **clean_env(live_prefect),
        **s3_run.store.env,
        "CIVICLAKE_HOME": str(docker_worker.home),
    }
    assert sql(env, COUNT_BY_DATE, "--lake", s3_run.lake_url) == [
        {"date": day(2), "n": ROWS_PER_DAY},
        {"date": day(3), "n": ROWS_PER_DAY},
    ]
    keys = s3_run.store.list_objects("docker-lake")
    assert any("/warehouse/mta/bnt_traffic_hourly/data/" in f"/{k}" for k in keys), keys[:5]
    # the block's credentials reached the flow from the Prefect API, not the container's config
    inspected = json.dumps(s3_run.run.container)
    leaked = [secret for secret in s3_run.store.secrets() if secret in inspected]
    assert not leaked
    assert s3_run.store.env["AWS_ACCESS_KEY_ID"] not in inspected
