"""One settings model: env vars ``CIVICLAKE_*``, an optional TOML file, defaults.

Precedence, highest first: explicit arguments, environment, the config file
(``$CIVICLAKE_CONFIG`` or ``$CIVICLAKE_HOME/civiclake.toml``), defaults. Every default
lives under ``CIVICLAKE_HOME`` so a fresh laptop needs no service at all.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, BaseModel, Field, Secret, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from civiclake.lake import Lake

DEFAULT_HOME = Path("~/.civiclake")
DEFAULT_SOCRATA_URL = "https://data.ny.gov"
CONFIG_FILE_NAME = "civiclake.toml"
DEFAULT_CATALOG_NAME = "civiclake"


def _config_file() -> Path:
    explicit = os.environ.get("CIVICLAKE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    home = Path(os.environ.get("CIVICLAKE_HOME", str(DEFAULT_HOME))).expanduser()
    return home / CONFIG_FILE_NAME


class DatasetConfig(BaseModel):
    """A Socrata dataset declared in the config file as ``[datasets.NAME]``."""

    id: str = Field(description="The dataset's 4x4 id (or its URL).")
    portal: str | None = Field(None, description="Portal URL; default CIVICLAKE_SOCRATA_URL.")
    table: str | None = Field(None, description="NS.NAME; default socrata.<id>.")
    partition: str | None = Field(None, description="month(COL), day(COL), year(COL) or none.")
    where: str | None = Field(None, description="A SoQL $where filter.")


class Settings(BaseSettings):
    """Where civiclake keeps things and how it reaches its sources."""

    model_config = SettingsConfigDict(env_prefix="CIVICLAKE_", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="Root of every embedded default.")
    lake_url: str | None = Field(
        None, description="fsspec URL of the lake; default file://$CIVICLAKE_HOME/lake."
    )
    lake_options: Secret[dict[str, Any]] = Field(
        default_factory=lambda: Secret[dict[str, Any]]({}),
        description="fsspec storage options for the lake (JSON in CIVICLAKE_LAKE_OPTIONS); secret.",
    )
    catalog_uri: str | None = Field(
        None,
        description=(
            "Iceberg catalog: a SQLAlchemy URI (default sqlite:///$CIVICLAKE_HOME/catalog.db) "
            "or the http(s) URL of a REST catalog."
        ),
    )
    catalog_name: str | None = Field(
        None,
        description=(
            "Catalog name; default 'civiclake' for the default lake, 'civiclake@<lake URL>' "
            "for any other, so each lake has its own tables in the embedded catalog."
        ),
    )
    socrata_url: str = DEFAULT_SOCRATA_URL
    socrata_app_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SOCRATA_APP_TOKEN", "CIVICLAKE_SOCRATA_APP_TOKEN"),
        description="Sent as X-App-Token; raises the portal's rate limits. Never logged.",
    )
    http_timeout: float = Field(30.0, gt=0, description="Seconds per HTTP request.")
    http_max_attempts: int = Field(6, ge=1, description="Attempts per request before giving up.")
    http_backoff_initial: float = Field(0.5, ge=0, description="First retry delay, seconds.")
    http_backoff_max: float = Field(30.0, ge=0, description="Cap on one retry delay, seconds.")
    page_size: int = Field(50_000, ge=1, description="Rows per Socrata page ($limit).")
    fetch_retries: int = Field(1, ge=0, description="Prefect task retries of a whole fetch.")
    fetch_retry_delay: float = Field(10.0, ge=0, description="Seconds before a fetch retry.")
    lock_timeout: float = Field(
        7200.0, gt=0, description="Seconds a run waits for a table's lock before giving up."
    )
    tlc_url: str = Field(
        "https://github.com/DataTalksClub/nyc-tlc-data/releases/download",
        description="TLC files: the course mirror's base, or a {color}/{yyyy}/{mm} template.",
    )
    tlc_zones_url: str | None = Field(
        None, description="taxi_zone_lookup.csv; default: <TLC mirror root>/misc/."
    )
    tlc_concurrency: int = Field(2, ge=1, description="Months processed at the same time.")
    engine: str = Field(
        "arrow", description="The stage engine (civiclake.pipeline.engines): arrow or spark."
    )
    download_timeout: float = Field(120.0, gt=0, description="Seconds without data = failure.")
    download_retries: int = Field(3, ge=0, description="Retries of a failed download.")
    download_retry_delay: float = Field(2.0, ge=0, description="First retry delay; doubles.")
    postgres_url: SecretStr | None = Field(
        None, description="postgresql://user:password@host:port/db for --to postgres."
    )
    bigquery_project: str | None = Field(
        None, description="Google Cloud project of the BigQuery warehouse (--to bigquery)."
    )
    bigquery_dataset: str | None = Field(
        None, description="BigQuery dataset for every table; default the table's namespace (tlc)."
    )
    bigquery_location: str = Field("US", description="Location of datasets civiclake creates.")
    bigquery_credentials: Secret[dict[str, Any]] | None = Field(
        None,
        description="A service account key (JSON) for BigQuery; default Google's ADC. Secret.",
    )
    bigquery_endpoint: str | None = Field(
        None, description="BigQuery API endpoint override (an emulator); default Google's."
    )
    datasets: dict[str, DatasetConfig] = Field(
        default_factory=dict, description="Named Socrata datasets ([datasets.NAME] tables)."
    )
    spark_master: str = Field(
        "local[*]",
        description="Spark master for --engine spark: local[N], spark://HOST:7077, yarn, k8s://...",
    )
    spark_conf: Secret[dict[str, str]] = Field(
        default_factory=lambda: Secret[dict[str, str]]({}),
        description="Extra Spark properties (JSON object in CIVICLAKE_SPARK_CONF); secret.",
    )
    bnt_dataset_id: str = "qzve-kjga"
    bnt_lookback_days: int = Field(
        7, ge=0, description="Days re-fetched before the high-water mark."
    )

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _spark_conf_json(cls, value: object) -> object:
        """``CIVICLAKE_SPARK_CONF`` is a JSON object; values become strings (Spark's own)."""
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                raise ValueError("not a JSON object of Spark properties") from None
        if isinstance(value, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return value

    @field_validator("lake_options", "bigquery_credentials", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        """From the environment these come as JSON text (``CIVICLAKE_LAKE_OPTIONS='{...}'``):
        pydantic-settings decodes JSON only for plain dict fields, not inside ``Secret``."""
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                raise ValueError("not a JSON object") from None
        if value is None or isinstance(value, Secret):
            return value
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml, file_secret_settings)

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @cached_property
    def resolved_lake_url(self) -> str:
        url = self.lake_url or (self.home_dir / "lake").as_uri()
        return url.rstrip("/")

    @cached_property
    def resolved_catalog_name(self) -> str:
        if self.catalog_name:
            return self.catalog_name
        default_lake = (self.home_dir / "lake").as_uri()
        if self.resolved_lake_url == default_lake:
            return DEFAULT_CATALOG_NAME
        return f"{DEFAULT_CATALOG_NAME}@{self.resolved_lake_url}"

    @cached_property
    def resolved_catalog_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.home_dir / 'catalog.db'}"

    def lake(self) -> Lake:
        """The configured lake (URL plus storage options)."""
        from civiclake.lake import Lake

        return Lake(self.resolved_lake_url, **self.lake_options.get_secret_value())

    @property
    def warehouse_url(self) -> str:
        """Where Iceberg keeps data and metadata files: inside the lake."""
        return f"{self.resolved_lake_url}/warehouse"


def get_settings(**overrides: object) -> Settings:
    """Read settings now (not at import), so tests and CLI options can change the environment.

    A bad value, a malformed or misspelled config file and a home that is a file are
    ``ParameterError``s (one line, exit 2): a typo must not be silently ignored."""
    from pydantic import ValidationError

    from civiclake.errors import ConfigError

    path = _config_file()
    _check_config_keys(path)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, path)) from None
    if settings.home_dir.exists() and not settings.home_dir.is_dir():
        raise ConfigError(
            f"CIVICLAKE_HOME {settings.home_dir} is not a directory: point it at a folder "
            "(created if missing)"
        )
    return settings


def _check_config_keys(path: Path) -> None:
    """Refuse a config file that is not TOML or has keys civiclake does not know."""
    import tomllib

    from civiclake.errors import ConfigError

    if not path.is_file():
        return
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = set(Settings.model_fields)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key {unknown[0]!r} (known keys: "
            f"{', '.join(sorted(known - {'datasets'}))}, [datasets.NAME])"
        )
    datasets = data.get("datasets", {})
    if not isinstance(datasets, dict):
        return  # the model reports the type
    fields = set(DatasetConfig.model_fields)
    for name, entry in datasets.items():
        extra = sorted(set(entry) - fields) if isinstance(entry, dict) else []
        if extra:
            raise ConfigError(
                f"config file {path}: [datasets.{name}] has an unknown key {extra[0]!r} "
                f"(known: {', '.join(sorted(fields))})"
            )


_SECRET_SETTINGS = {"spark_conf", "lake_options", "postgres_url", "bigquery_credentials"}
"""Settings whose value an error message never shows."""


def _validation_message(exc: Any, path: Path) -> str:
    """The first invalid setting, named as the user wrote it (env var or config key)."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc and loc[0] == "datasets":
        where = f"[datasets.{loc[1]}]" if len(loc) > 1 else "[datasets]"
        if error["type"] == "missing" and len(loc) > 2:
            return f'config file {path}: {where} needs {loc[2]} = "..." (e.g. id = "xxxx-xxxx")'
        return f"config file {path}: {where} {'.'.join(loc[2:])}: {error['msg']}"
    field = loc[0] if loc else "?"
    value = error.get("input")
    secret = field in _SECRET_SETTINGS
    shown = f" = {value!r}" if isinstance(value, str | int | float) and not secret else ""
    return (
        f"setting {field}{shown}: {error['msg']} "
        f"(from CIVICLAKE_{field.upper()} or {field} in {path})"
    )
