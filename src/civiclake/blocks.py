"""civiclake's Prefect block types: configuration a Prefect server keeps, secrets encrypted.

Register them with ``prefect block register -m civiclake.blocks``, create documents in the UI or
in code, then name them instead of environment settings: ``--lake-block``,
``--warehouse-block``, ``--socrata-token-block`` on the CLI, the same-named flow parameters in a
deployment — as the course did with ``SqlAlchemyConnector.load("postgres-connector")``.
The Socrata app token uses Prefect's own ``Secret`` block.

Flows and tasks receive block *names*, never values: secrets do not become task parameters,
so they never reach the run's parameters, logs or artifacts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field, SecretStr

from civiclake.config import Settings, get_settings
from civiclake.errors import ParameterError
from civiclake.warehouse import WAREHOUSE_MODULES


class LakeBlock(Block):
    """Where the lake lives and how to reach it."""

    _block_type_name = "civiclake Lake"
    _block_type_slug = "civiclake-lake"
    _description = (
        "A civiclake lake: an fsspec URL (file://, abfs://, s3://, gs://) and its credentials."
    )

    url: str = Field(..., description="The lake's root, e.g. abfs://mta-demo/lake.")
    credentials: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="fsspec storage options, e.g. connection_string or account_key (secret).",
    )


class PostgresWarehouseBlock(Block):
    """A PostgreSQL warehouse; the password is a secret field."""

    _block_type_name = "civiclake PostgreSQL"
    _block_type_slug = "civiclake-postgres"
    _description = "A PostgreSQL warehouse for civiclake (`--to postgres`)."

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: SecretStr = Field(default=SecretStr(""), description="Stored encrypted.")

    def url(self) -> SecretStr:
        password = quote(self.password.get_secret_value(), safe="")
        auth = f"{quote(self.user, safe='')}:{password}" if password else quote(self.user, safe="")
        return SecretStr(f"postgresql://{auth}@{self.host}:{self.port}/{self.database}")


class BigQueryWarehouseBlock(Block):
    """A BigQuery warehouse: project, dataset, and a service account key as a secret field."""

    _block_type_name = "civiclake BigQuery"
    _block_type_slug = "civiclake-bigquery"
    _description = "A BigQuery warehouse for civiclake (`--to bigquery`)."

    project: str = Field(..., description="Google Cloud project id.")
    dataset: str | None = Field(None, description="Dataset for every table; empty: 'tlc'.")
    location: str = Field("US", description="Location of datasets civiclake creates.")
    service_account_info: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="A service account key (JSON); empty: application default credentials.",
    )
    endpoint: str | None = Field(None, description="API endpoint override (an emulator).")


WAREHOUSE_BLOCKS: tuple[type[Block], ...] = tuple(
    globals()[entry.block_class] for entry in WAREHOUSE_MODULES.values() if entry.block_class
)
"""The warehouse block types, in the registry's order (``WarehouseModule.block_class``)."""


def load_warehouse_block(name: str) -> Block:
    """A warehouse block by name (``civiclake-bigquery/name`` also accepted), whatever its type."""
    if "/" in name:
        slug, _, name = name.partition("/")
        kinds = [b for b in WAREHOUSE_BLOCKS if b.get_block_type_slug() == slug]
        if not kinds:
            raise ParameterError(f"--warehouse-block: {slug!r} is not a civiclake warehouse block")
    else:
        kinds = list(WAREHOUSE_BLOCKS)
    for kind in kinds:
        try:
            return kind.load(name)
        except ValueError:  # no document of that type and name
            continue
    slugs = " or ".join(b.get_block_type_slug() for b in kinds)
    raise ParameterError(f"--warehouse-block: no {slugs} block named {name!r}")


def _warehouse_overrides(block: Block) -> dict[str, Any]:
    if isinstance(block, PostgresWarehouseBlock):
        return {"postgres_url": block.url()}
    if isinstance(block, BigQueryWarehouseBlock):
        info = block.service_account_info.get_secret_value()
        return {
            "bigquery_project": block.project,
            "bigquery_dataset": block.dataset,
            "bigquery_location": block.location,
            "bigquery_endpoint": block.endpoint,
            "bigquery_credentials": info or None,
        }
    raise ParameterError(f"unsupported warehouse block {type(block).__name__}")


def settings_with_blocks(
    lake_block: str | None = None,
    warehouse_block: str | None = None,
    socrata_token_block: str | None = None,
    lake: str | None = None,
) -> Settings:
    """Settings where the named blocks (and an explicit lake URL) replace the matching
    environment settings."""
    overrides: dict[str, Any] = {}
    if lake:
        overrides["lake_url"] = lake
    if lake_block:
        lake = LakeBlock.load(lake_block)
        overrides["lake_url"] = lake.url
        overrides["lake_options"] = lake.credentials.get_secret_value()
    if warehouse_block:
        overrides.update(_warehouse_overrides(load_warehouse_block(warehouse_block)))
    if socrata_token_block:
        from prefect.blocks.system import Secret

        overrides["socrata_app_token"] = SecretStr(str(Secret.load(socrata_token_block).get()))
    return get_settings(**overrides)


Blocks = dict[str, str | None] | None
"""What a flow passes its tasks instead of settings: block names (``lake_block``,
``warehouse_block``, ...) and the ``lake`` URL; never a secret."""


def settings_for(blocks: Blocks) -> Settings:
    """Settings for a task: the environment's, with any named blocks applied."""
    names = {key: value for key, value in (blocks or {}).items() if value}
    return settings_with_blocks(**names) if names else get_settings()
