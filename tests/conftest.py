"""Every test gets its own CIVICLAKE_HOME and a clean civiclake environment."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# before anything imports gcsfs: sets GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (see the module)
from testsupport.objectstores import ObjectStore, azurite, gcs_emulator, moto_s3

if TYPE_CHECKING:
    from testsupport.bigquery import BigQueryEmulator
    from testsupport.postgres import PostgresServer
    from testsupport.prefect_server import PrefectServer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLE_CSV = ROOT / "examples" / "bnt_sample.csv"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(autouse=True)
def civiclake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("CIVICLAKE_") or key == "SOCRATA_APP_TOKEN":
            monkeypatch.delenv(key)
    home = tmp_path / "civiclake-home"
    monkeypatch.setenv("CIVICLAKE_HOME", str(home))
    # a run command would start a long-lived `civiclake server` in this throw-away home:
    # tests keep today's temporary server unless they test that server (tests/test_server.py)
    monkeypatch.setenv("CIVICLAKE_SERVER_AUTOSTART", "0")
    # fast, bounded retries: the behaviour is the same, the waits are not
    monkeypatch.setenv("CIVICLAKE_HTTP_BACKOFF_INITIAL", "0.01")
    monkeypatch.setenv("CIVICLAKE_HTTP_BACKOFF_MAX", "0.05")
    monkeypatch.setenv("CIVICLAKE_HTTP_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("CIVICLAKE_HTTP_TIMEOUT", "5")
    monkeypatch.setenv("CIVICLAKE_FETCH_RETRY_DELAY", "0")
    monkeypatch.setenv("CIVICLAKE_DOWNLOAD_RETRY_DELAY", "0")
    return home


@pytest.fixture(autouse=True)
def no_closed_log_streams() -> Iterator[None]:
    """In-process CLI tests (CliRunner) swap sys.stderr for a buffer they close afterwards;
    Prefect's console handler, configured during such a test, kept writing to it and printed
    "--- Logging error ---" into a later test's output. After each test, every log handler
    whose stream was closed goes back to the real stderr."""
    yield
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            console = getattr(handler, "console", None)  # Prefect's rich console handler
            if console is not None and getattr(console.file, "closed", False):
                console.file = sys.__stderr__
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.__stderr__  # not setStream: it flushes the closed one


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server (own database) for the whole session: ~15-25 s once."""
    from prefect.testing.utilities import prefect_test_harness

    import civiclake.flows  # noqa: F401  (sets Prefect's offline defaults before import)

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def live_prefect() -> Iterator[PrefectServer]:
    """One real Prefect server process (API + UI on 127.0.0.1) for the deployment and docker
    tests: a worker, the ``prefect`` CLI and containers cannot reach ``prefect_server``'s."""
    from testsupport.prefect_server import PrefectServer

    with PrefectServer() as server:
        yield server


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[BigQueryEmulator]:
    """One bqemulator for the session (~4 s to start), in-memory, on 127.0.0.1."""
    from testsupport.bigquery import BigQueryEmulator

    with BigQueryEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL (the machine's binaries, a temp dir, 127.0.0.1) for the session."""
    from testsupport.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.url


# Object-store emulators (Azurite, moto, gcp-storage-emulator): each started once per session.
@pytest.fixture(scope="session")
def azure_store() -> Iterator[ObjectStore]:
    with azurite() as store:
        yield store


@pytest.fixture(scope="session")
def s3_store() -> Iterator[ObjectStore]:
    with moto_s3() as store:
        yield store


@pytest.fixture(scope="session")
def gcs_store() -> Iterator[ObjectStore]:
    import gcsfs

    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        pytest.fail(
            "gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set: "
            "its experimental filesystem takes 60+ s per call"
        )
    with gcs_emulator() as store:
        yield store


@pytest.fixture(params=["azure", "s3", "gcs"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each object store in turn (a test using it runs once per kind)."""
    return request.getfixturevalue(f"{request.param}_store")
