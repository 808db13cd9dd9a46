"""The Spark engine's settings and the parts of its session set-up that need no JVM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from civiclake.config import get_settings
from civiclake.errors import CivicLakeError, ConfigError
from civiclake.pipeline.engines import ENGINES, spark
from testsupport._process import free_port


def test_engine_settings_defaults() -> None:
    settings = get_settings()
    assert settings.engine == "arrow"
    assert settings.spark_master == "local[*]"
    assert settings.spark_conf.get_secret_value() == {}
    assert "spark" in ENGINES


def test_spark_conf_is_a_secret_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICLAKE_ENGINE", "spark")
    monkeypatch.setenv("CIVICLAKE_SPARK_MASTER", "spark://10.0.0.5:7077")
    monkeypatch.setenv(
        "CIVICLAKE_SPARK_CONF",
        '{"spark.executor.memory": "4g", "spark.x.token": "t0p-s3cret", "n": 2}',
    )
    settings = get_settings()
    assert (settings.engine, settings.spark_master) == ("spark", "spark://10.0.0.5:7077")
    assert settings.spark_conf.get_secret_value() == {
        "spark.executor.memory": "4g",
        "spark.x.token": "t0p-s3cret",
        "n": "2",  # Spark properties are strings
    }
    assert "t0p-s3cret" not in repr(settings) and "t0p-s3cret" not in str(settings.spark_conf)


@pytest.mark.parametrize("value", ['{"a": "t0p-s3cret"', '["t0p-s3cret"]'])
def test_bad_spark_conf_is_refused_without_showing_it(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_SPARK_CONF", value)
    with pytest.raises(ConfigError, match="setting spark_conf: ") as refused:
        get_settings()
    assert "t0p-s3cret" not in str(refused.value)
    assert "CIVICLAKE_SPARK_CONF" in str(refused.value)


def test_session_conf_local_and_remote_masters() -> None:
    local = spark.session_conf("local[2]", {"spark.ui.enabled": "true"})
    assert local["spark.driver.host"] == local["spark.driver.bindAddress"] == "127.0.0.1"
    assert local["spark.ui.enabled"] == "true"  # the user's properties win
    assert local["spark.pyspark.python"] == sys.executable
    remote = spark.session_conf("spark://spark-master.internal:7077", {})
    assert "spark.driver.host" not in remote and remote["spark.ui.enabled"] == "false"
    assert "spark.driver.host" in spark.session_conf("spark://127.0.0.1:7077", {})


def test_dead_master_probe_is_quick_and_one_line() -> None:
    master = f"spark://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(CivicLakeError, match="is not reachable") as failed:
        spark.probe_master(master)
    assert "\n" not in str(failed.value) and str(failed.value).count("Connection refused") == 2
    spark.probe_master("local[*]")  # nothing to probe
    spark.probe_master("yarn")


def test_lake_environment_forwards_only_the_sdks_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "c")
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", "postgresql://u:p@h/db")
    forwarded = spark.lake_environment()
    assert forwarded["AWS_SECRET_ACCESS_KEY"] == "k"
    assert forwarded["AZURE_STORAGE_CONNECTION_STRING"] == "c"
    assert "CIVICLAKE_POSTGRES_URL" not in forwarded and "PATH" not in forwarded
    environment = {"AWS_SECRET_ACCESS_KEY": "old", "SPARK_USER_SET": "x"}
    spark._forward_environment(environment)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    spark._forward_environment(environment)
    assert "AWS_SECRET_ACCESS_KEY" not in environment and environment["SPARK_USER_SET"] == "x"


def test_properties_file_escaping() -> None:
    assert spark._escape("a=b:c d", key=True) == "a\\=b\\:c\\ d"
    assert spark._escape("C:\\x\nnext") == "C:\\\\x\\nnext"
    assert spark._escape(" lead") == "\\ lead"


def _fake_java(home: Path, version_line: str) -> str:
    java = home / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return str(home)


def test_a_java_spark_does_not_run_on_is_one_line_before_any_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Java 25 (newer than Spark 3.5 supports) is refused in one line naming it; Java 8
    (``1.8``), 17 and an unreadable answer pass (Spark's own start then decides)."""
    for name, line, major in (
        ("j25", 'openjdk version "25" 2025-09-16', 25),
        ("j8", 'java version "1.8.0_402"', 8),
        ("j17", 'openjdk version "17.0.13" 2024-10-15', 17),
        ("odd", "no version here", None),
    ):
        home = _fake_java(tmp_path / name, line)
        assert spark.java_major(home) == major
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "j25"))
    with pytest.raises(CivicLakeError) as refused:
        spark.spark_session(get_settings())
    message = str(refused.value)
    assert message.startswith("--engine spark needs Java 8, 11, 17, 21 (Spark 3.5); ")
    assert "is Java 25" in message and "\n" not in message
    for ok in ("j8", "j17", "odd"):
        monkeypatch.setenv("JAVA_HOME", str(tmp_path / ok))
        assert spark.find_java() == str(tmp_path / ok)
