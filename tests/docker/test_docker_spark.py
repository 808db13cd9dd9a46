"""The image built for the Spark engine (README "Docker": ``--build-arg EXTRAS=...,spark
--build-arg JAVA=openjdk-17-jre-headless``) runs ``civiclake bnt run --engine spark`` in a
one-shot container: Spark's driver and its Python workers in the container, the Socrata replay
server and the Prefect API on the host (host network), the lake and catalog on a mounted volume
read back from the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from deploy_support import FAST_RETRIES, FIRST_DAY, ROWS_PER_DAY, clean_env
from docker_support import CONTAINER_UID, Engine, Image, build_image

from civiclake.testing.socrata import SocrataServer, bnt_rows
from testsupport.prefect_server import PrefectServer

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.spark]

SPARK_IMAGE = "civiclake-spark:test"
SPARK_ARGS = ("EXTRAS=azure,s3,gcs,bigquery,spark", "JAVA=openjdk-17-jre-headless")


@pytest.fixture(scope="module")
def spark_image(engine: Engine) -> Image:
    built = build_image(engine, SPARK_IMAGE, *SPARK_ARGS)
    print(f"\nspark image built in {built.build_seconds:.0f} s")
    return built


@pytest.fixture(scope="module")
def bad_row_source() -> Iterator[SocrataServer]:
    """Two days of B&T rows and one bad row (hour 24)."""
    rows = bnt_rows(FIRST_DAY, 2)
    with SocrataServer({"qzve-kjga": [*rows, {**rows[0], "hour": "24"}]}) as server:
        yield server


def _sql(env: dict[str, str], query: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "civiclake.cli", "sql", "--format", "json", query],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_spark_image_runs_bnt_with_the_spark_engine(
    engine: Engine,
    spark_image: Image,
    live_prefect: PrefectServer,
    bad_row_source: SocrataServer,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, CONTAINER_UID, CONTAINER_UID)
    env = {
        **FAST_RETRIES,
        "CIVICLAKE_HOME": str(home),
        "CIVICLAKE_SOCRATA_URL": bad_row_source.url,
        "PREFECT_API_URL": live_prefect.api_url,
    }
    stop = (FIRST_DAY + timedelta(days=2)).isoformat()
    args = ["run", "--rm", "--network", "host", "-v", f"{home}:{home}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    done = engine.run(
        *args,
        spark_image.name,
        *("civiclake", "bnt", "run", "--engine", "spark"),
        *("--start-date", FIRST_DAY.isoformat(), "--stop-date", stop),
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "spark: session on local[*] started" in output, output[-4000:]
    assert "spark: stage mta.bnt_traffic_hourly done" in output, output[-4000:]

    # read from the host, in the lake/catalog the container wrote (as its non-root user)
    host = {**clean_env(live_prefect), "CIVICLAKE_HOME": str(home)}
    count = "SELECT count(*) AS n FROM mta.bnt_traffic_hourly"
    assert _sql(host, count) == [{"n": 2 * ROWS_PER_DAY}]
    rejects = _sql(host, "SELECT reason FROM mta.bnt_traffic_hourly_rejects")
    assert len(rejects) == 1 and "hour missing or outside 0-23" in str(rejects[0]["reason"])
    owners = {p.stat().st_uid for p in (home / "lake").rglob("*.parquet")}
    assert owners == {CONTAINER_UID}
