from pathlib import Path

import pytest

from civiclake.config import get_settings


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
