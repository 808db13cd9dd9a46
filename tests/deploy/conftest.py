"""Deployments end to end: a real Prefect server process, `civiclake deploy`, one process worker.

``prefect_test_harness`` (tests/conftest.py) serves the API inside the test process, which a
worker subprocess, the ``prefect`` CLI and a browser cannot reach: these tests start the real
``prefect server start`` once per session instead (~15-60 s on 2 cores).

The worker and the assertions share ONE explicit CIVICLAKE_HOME (the autouse ``civiclake_home``
fixture gives every test its own): the worker's flow runs write there, and tests set
``CIVICLAKE_HOME`` to it before reading tables.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import (
    DATASET,
    DAYS,
    FAST_RETRIES,
    FIRST_DAY,
    TLC_FILE,
    Worker,
    clean_env,
    run_deploy,
    start_worker,
)

import civiclake.flows  # noqa: F401  (Prefect's offline defaults, before Prefect is imported)
from civiclake.testing.socrata import SocrataServer, bnt_rows
from testsupport._process import stop_process_group
from testsupport.files import FileServer
from testsupport.prefect_server import PrefectServer

_WORKERS: list[Worker] = []  # for the failure report hook below


@pytest.fixture(autouse=True)
def _client_settings(live_prefect: PrefectServer) -> Iterator[None]:
    """In-process Prefect clients (blocks, reads) talk to the live server.

    A settings context, not just the environment: Prefect reads its settings at import, and
    ``prefect_test_harness`` may already hold a context pointing at its own server.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: live_prefect.api_url}):
        yield


@pytest.fixture(scope="module")
def socrata() -> Iterator[SocrataServer]:
    with SocrataServer({DATASET: bnt_rows(FIRST_DAY, DAYS)}) as server:
        yield server


@pytest.fixture(scope="module")
def tlc_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """The TLC course mirror's layout (``green/<file>``) with the one real month we ship."""
    root = tmp_path_factory.mktemp("tlc-mirror")
    (root / "green").mkdir()
    if TLC_FILE.is_file():
        shutil.copyfile(TLC_FILE, root / "green" / TLC_FILE.name)
    with FileServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CIVICLAKE_HOME of the worker's flow runs and of the tests' table reads."""
    return tmp_path_factory.mktemp("shared-civiclake-home")


@pytest.fixture(scope="module")
def deployed(live_prefect: PrefectServer) -> subprocess.CompletedProcess[str]:
    """`civiclake deploy` once: the work pool, block types and both deployments."""
    done = run_deploy(live_prefect)
    assert done.returncode == 0, f"civiclake deploy failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def worker(
    live_prefect: PrefectServer,
    deployed: subprocess.CompletedProcess[str],
    socrata: SocrataServer,
    tlc_mirror: FileServer,
    shared_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """`prefect worker start --pool civiclake`, from the repo root, for the whole module."""
    env = clean_env(live_prefect)
    env.update(FAST_RETRIES)
    env.update(
        {
            "CIVICLAKE_HOME": str(shared_home),
            "CIVICLAKE_SOCRATA_URL": socrata.url,
            "CIVICLAKE_PAGE_SIZE": "1000",
            "CIVICLAKE_TLC_URL": tlc_mirror.url,
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick runs up quickly (default 10 s)
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker("civiclake", env, log_path)
    handle = Worker(process, log_path, shared_home, env)
    _WORKERS.append(handle)
    try:
        yield handle
    finally:
        _WORKERS.remove(handle)
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The worker and any flow run it still has running."""
    stop_process_group(process, grace=20)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the tail of the worker's log (flow runs print there) to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _WORKERS:
        report.sections.append(("worker log (tail)", _WORKERS[-1].tail()))
