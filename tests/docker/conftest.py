"""The docker tests' engine, image, pool and worker: all real, all local.

One private ``dockerd`` per session (its own data root, exec root and socket under a temp dir;
``--iptables=false --ip-forward=false --bridge=none``: the host's network stays untouched), the
base image from the debootstrap cache (``.emulators/docker/``; no registry is reachable) and
civiclake's image built from ./Dockerfile ONCE per session. The Prefect server is the session's
``live_prefect``; the deployment helpers are tests/deploy's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from deploy_support import (
    DATASET,
    DAYS,
    FAST_RETRIES,
    FIRST_DAY,
    Worker,
    clean_env,
    run_deploy,
    start_worker,
)
from docker_support import CONTAINER_UID, IMAGE, Engine, Image, build_image

import civiclake.flows  # noqa: F401  (Prefect's offline defaults, before Prefect)
from civiclake.testing.socrata import SocrataServer, bnt_rows
from testsupport._process import stop_process_group
from testsupport.dockerd import DockerDaemon, docker_client
from testsupport.prefect_server import PrefectServer

_WORKERS: list[Worker] = []


@pytest.fixture(autouse=True)
def _client_settings(live_prefect: PrefectServer) -> Iterator[None]:
    """In-process Prefect clients (blocks, reads) talk to the live server (tests/deploy does
    the same: a settings context, since ``prefect_test_harness`` may hold one of its own)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: live_prefect.api_url}):
        yield


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with DockerDaemon() as daemon:
        yield Engine(daemon, docker_client())


@pytest.fixture(scope="session")
def image(engine: Engine) -> Image:
    """./Dockerfile as prefect.yaml's docker deployments run it (default build arguments)."""
    return build_image(engine, IMAGE)


@pytest.fixture(scope="module")
def socrata() -> Iterator[SocrataServer]:
    with SocrataServer({DATASET: bnt_rows(FIRST_DAY, DAYS)}) as server:
        yield server


@pytest.fixture(scope="module")
def volume_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIVICLAKE_HOME of the containers' runs, mounted at the same path, and of the host's
    reads; owned by the image's non-root user, who writes the lake and catalog there."""
    home = tmp_path_factory.mktemp("docker-civiclake-home")
    os.chown(home, CONTAINER_UID, CONTAINER_UID)
    return home


@pytest.fixture(scope="module")
def docker_deployed(live_prefect: PrefectServer) -> subprocess.CompletedProcess[str]:
    """`civiclake deploy --docker` once: the docker pool and both docker deployments."""
    done = run_deploy(live_prefect, "--docker")
    assert done.returncode == 0, f"civiclake deploy --docker failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def docker_worker(
    live_prefect: PrefectServer,
    engine: Engine,
    image: Image,
    docker_deployed: subprocess.CompletedProcess[str],
    volume_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """`prefect worker start --pool civiclake-docker` against the session's engine.

    ``Worker.env`` is what a run's job variable ``env`` gives the container: the worker passes
    none of its own environment on (only Prefect's API settings).
    """
    env = engine.daemon.env(clean_env(live_prefect))
    env.update({"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"})
    log_path = tmp_path_factory.mktemp("docker-worker") / "worker.log"
    process = start_worker("civiclake-docker", env, log_path)
    container_env = {**FAST_RETRIES, "CIVICLAKE_HOME": str(volume_home)}
    handle = Worker(process, log_path, volume_home, container_env)
    _WORKERS.append(handle)
    try:
        yield handle
    finally:
        _WORKERS.remove(handle)
        stop_process_group(process, grace=20)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the tail of the docker worker's log (it streams the containers')."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _WORKERS:
        report.sections.append(("docker worker log (tail)", _WORKERS[-1].tail()))
