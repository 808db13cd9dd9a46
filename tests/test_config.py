import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from civiclake.cli import app
from civiclake.config import get_settings
from testsupport.objectstores import ObjectStore, use_env


def test_defaults_live_under_home(civiclake_home: Path) -> None:
    settings = get_settings()
    assert settings.resolved_lake_url == (civiclake_home / "lake").as_uri()
    assert settings.resolved_catalog_uri == f"sqlite:///{civiclake_home / 'catalog.db'}"
    assert settings.warehouse_url.endswith("/lake/warehouse")
    assert settings.socrata_url == "https://data.ny.gov"


def test_env_overrides_config_file(civiclake_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    civiclake_home.mkdir(parents=True)
    (civiclake_home / "civiclake.toml").write_text(
        'socrata_url = "http://from-file"\npage_size = 123\n'
    )
    assert get_settings().page_size == 123
    assert get_settings().socrata_url == "http://from-file"
    monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "7")
    assert get_settings().page_size == 7


def test_explicit_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "other.toml"
    config.write_text('lake_url = "file:///tmp/elsewhere/"\n')
    monkeypatch.setenv("CIVICLAKE_CONFIG", str(config))
    assert get_settings().resolved_lake_url == "file:///tmp/elsewhere"


def test_app_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCRATA_APP_TOKEN", "s3cr3t-token")
    settings = get_settings()
    assert settings.socrata_app_token is not None
    assert settings.socrata_app_token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(settings)
    assert "s3cr3t-token" not in str(settings.model_dump())


def test_bad_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "0")
    with pytest.raises(ValueError, match="page_size"):
        get_settings()


def test_lake_options_from_the_environment_reach_the_filesystem(
    s3_store: ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CIVICLAKE_LAKE_OPTIONS (JSON) is the only place the S3 credentials are: they reach s3fs
    (moto checks the signature), and neither the settings nor any output shows them."""
    use_env(monkeypatch, tmp_path, {})  # no AWS_* variable: only the lake options can work
    env = s3_store.env
    secret = env["AWS_SECRET_ACCESS_KEY"]
    options = {
        "key": env["AWS_ACCESS_KEY_ID"],
        "secret": secret,
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "client_kwargs": {"region_name": env["AWS_DEFAULT_REGION"]},
    }
    url = s3_store.lake_url(f"options-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("CIVICLAKE_LAKE_URL", url)
    monkeypatch.setenv("CIVICLAKE_LAKE_OPTIONS", json.dumps(options))

    settings = get_settings()
    assert settings.lake_options.get_secret_value() == options
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    lake = settings.lake()
    lake.write_bytes(f"{url}/probe.txt", b"reached")
    prefix = url.split("://", 1)[1].split("/", 1)[1]
    assert s3_store.list_objects(prefix) == [f"{prefix}/probe.txt"]

    with caplog.at_level("DEBUG"):
        doctor = CliRunner().invoke(app, ["doctor"])
    assert "ok   lake" in doctor.stdout, doctor.output
    assert secret not in doctor.output and secret not in caplog.text


def test_lake_options_that_are_not_a_json_object_are_one_line_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for value in ('{"secret": "s3cr3t-value"', '["s3cr3t-value"]'):
        monkeypatch.setenv("CIVICLAKE_LAKE_OPTIONS", value)
        result = CliRunner().invoke(app, ["tables"])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: setting lake_options: ")
        assert "not a JSON object (from CIVICLAKE_LAKE_OPTIONS" in lines[0]
        assert "s3cr3t" not in result.output


def test_bigquery_credentials_from_the_environment_are_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = {"type": "service_account", "private_key": "s3cr3t-key"}
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_CREDENTIALS", json.dumps(key))
    settings = get_settings()
    assert settings.bigquery_credentials is not None
    assert settings.bigquery_credentials.get_secret_value() == key
    assert "s3cr3t-key" not in repr(settings)
