"""BigQuery: a serverless warehouse in ``CIVICLAKE_BIGQUERY_PROJECT`` (google-cloud-bigquery).

Data goes in through LOAD JOBS from the lake's Parquet files, never streaming inserts: from a
gs:// lake BigQuery reads the files itself (``load_table_from_uri``); from any other lake each
file is streamed up (``load_table_from_file``, a resumable upload read straight from
``lake.open``, bounded memory). Loads land in a staging table; one multi-statement transaction
then deletes the slice from the target (a month, a set of days, the row ids of a merge, the
whole table) and inserts the staged rows, so a re-run replaces instead of duplicating and
readers never see half a load. The staging table is
dropped afterwards (and expires by itself a day later if the process dies first).

Types: naive timestamps (wall time, UTC as in the lake) are DATETIME, zoned ones TIMESTAMP, as
TIMESTAMP / TIMESTAMPTZ in the other warehouses. Each table is created with that explicit
schema, partitioned by month on its range column, in a dataset named after the table's
namespace (``tlc``) unless ``CIVICLAKE_BIGQUERY_DATASET`` names one.

Credentials are Google's application default credentials; with ``CIVICLAKE_BIGQUERY_ENDPOINT``
(an emulator) and no ADC configured, anonymous ones, so nothing probes the metadata server.

Tested against bqemulator 1.4 (``testsupport.bigquery``), which lacks a few things, so
the code takes the road both accept: query parameters are not bound inside multi-statement
scripts there (range bounds are typed SQL literals, formatted here from date/datetime values,
never from user text); Parquet loads match columns by position there, by name in BigQuery (a
staging table per column order of the files, so both read the same); BIGNUMERIC columns fail
there (DuckDB decimals stop at 38 digits); partition decorators (``table$202401``) fail there;
``ALTER TABLE ADD COLUMN`` changes its storage but not the schema its API reports (patched).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import pyarrow as pa
import pyarrow.parquet as pq
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_info import ClientInfo
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery

from civiclake._private.net import unreachable
from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake, scheme_of
from civiclake.slices import RowIds, Slice
from civiclake.warehouse._arrow_sql import (
    check_file_schema,
    check_slice,
    one_line,
    parquet_schema,
    split_table,
    sql_type,
)
from civiclake.warehouse._sql import Load, SqlWarehouse, range_column, slice_condition

__all__ = [
    "BigQueryWarehouse",
    "bigquery_schema",
    "bigquery_type",
    "resolve_credentials",
]

PROJECT_VAR = "CIVICLAKE_BIGQUERY_PROJECT"
DEFAULT_API_HOST = "bigquery.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/bigquery",)
CHECK_NAMESPACE = "tlc"  # the dataset the doctor probes when none is configured
API_RETRY_S = 60.0  # the client's default is 600 s of retries: a CLI should fail sooner
JOB_TIMEOUT_S = 3600.0
STAGING_TTL = timedelta(days=1)
_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_PROJECT_RE = re.compile(r"^[a-z0-9.:-]{1,128}$")
_BAD_NAME_CHARS = re.compile(r"[`\\\n\r]")
_HTTP_PREFIX = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE) \S+: ")  # the request's URL
_STANDARD_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
_TIME_TYPES = ("DATE", "DATETIME", "TIMESTAMP")


def bigquery_type(dtype: pa.DataType) -> str | None:
    """The BigQuery column type of an Arrow type (``NUMERIC(10,2)`` style), None if none."""
    try:
        return sql_type(dtype, "bigquery")
    except CivicLakeError:
        return None


def _field(name: str, dtype: pa.DataType, table: str) -> bigquery.SchemaField:
    kind = bigquery_type(dtype)
    if kind is None:
        raise CivicLakeError(f"table {table}: no BigQuery column type for Arrow type {dtype}")
    head, _, rest = kind.partition("(")
    if rest:
        precision, scale = (int(n) for n in rest.rstrip(")").split(","))
        return bigquery.SchemaField(name, head, precision=precision, scale=scale)
    return bigquery.SchemaField(name, head)


def bigquery_schema(table: str, schema: pa.Schema) -> list[bigquery.SchemaField]:
    """Every column NULLABLE, in the Arrow schema's order (what CREATE TABLE gets)."""
    if not schema.names:
        raise ParameterError(f"table {table}: the Arrow schema has no columns")
    if len(set(schema.names)) != len(schema.names):
        raise ParameterError(f"table {table}: the Arrow schema repeats a column name")
    for name in schema.names:
        if not name or _BAD_NAME_CHARS.search(name):
            raise ParameterError(f"table {table}: column name {name!r} cannot be used in BigQuery")
    return [_field(f.name, f.type, table) for f in schema]


def _adc_configured() -> bool:
    """ADC set up explicitly (a key file or ``gcloud auth application-default login``)."""
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path("~/.config/gcloud").expanduser())
    return (Path(config) / "application_default_credentials.json").is_file()


def resolve_credentials(endpoint: str | None) -> tuple[Credentials, str]:
    """Google credentials and a words-only description of where they came from.

    Against a custom endpoint without configured ADC: anonymous (an emulator wants none, and
    ``google.auth.default`` would otherwise probe the GCE metadata server for seconds).
    """
    if endpoint and not _adc_configured():
        return AnonymousCredentials(), "anonymous (custom endpoint, no ADC configured)"
    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except google.auth.exceptions.DefaultCredentialsError:
        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            raise CivicLakeError(
                "BigQuery: GOOGLE_APPLICATION_CREDENTIALS does not name a usable credentials file"
            ) from None
        raise CivicLakeError(
            "BigQuery: no Google credentials found: run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
        ) from None
    return credentials, _credential_source(credentials)


def service_account_credentials(info: dict[str, Any]) -> Credentials:
    """Credentials from a service account key (a block's secret field), checked locally."""
    from google.oauth2 import service_account

    try:
        return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
    except (ValueError, KeyError):
        raise CivicLakeError(
            "BigQuery: the service account key is not a valid key file (JSON with "
            "client_email, private_key, token_uri)"
        ) from None


def _credential_source(credentials: Credentials) -> str:
    module = type(credentials).__module__
    if "service_account" in module:
        return "application default (service account)"
    if "compute_engine" in module:
        return "application default (metadata server)"
    if module.startswith("google.oauth2.credentials"):
        return "application default (gcloud user)"
    if "external_account" in module or "identity_pool" in module:
        return "application default (workload identity federation)"
    return f"application default ({type(credentials).__name__})"


class BigQueryWarehouse(SqlWarehouse):
    """One BigQuery client; replaces are serialised within this object (like the others)."""

    name = "bigquery"
    dialect = "bigquery"
    label = "BigQuery"

    def __init__(
        self,
        project: str,
        *,
        dataset: str | None = None,
        location: str = "US",
        endpoint: str | None = None,
        credentials: Credentials | None = None,
        api_retry_s: float = API_RETRY_S,
        job_timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        if not project or not _PROJECT_RE.match(project):
            raise ParameterError(f"{PROJECT_VAR}={project!r} is not a Google Cloud project id")
        if dataset is not None and not _DATASET_RE.match(dataset):
            raise ParameterError(
                f"CIVICLAKE_BIGQUERY_DATASET={dataset!r}: use letters, digits and underscores"
            )
        self.project = project
        self.dataset = dataset
        self.location = location
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.job_timeout_s = job_timeout_s
        if credentials is None:
            credentials, self.credential_source = resolve_credentials(self.endpoint)
        else:
            self.credential_source = _credential_source(credentials)
        # the client's own list of transient errors, retried for less time than its 600 s
        self._retry: Retry = bigquery.DEFAULT_RETRY.with_timeout(api_retry_s)
        options = ClientOptions(api_endpoint=self.endpoint) if self.endpoint else None
        self._client = bigquery.Client(
            project=project,
            credentials=credentials,
            location=location,
            client_options=options,
            client_info=ClientInfo(user_agent="civiclake"),
        )
        self._locations: dict[str, str] = {}  # dataset -> its location (jobs must run there)
        self._endpoint_checked = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> BigQueryWarehouse:
        if not settings.bigquery_project:
            raise ParameterError(f"--to bigquery needs {PROJECT_VAR}")
        credentials = None
        if settings.bigquery_credentials is not None:
            credentials = service_account_credentials(
                settings.bigquery_credentials.get_secret_value()
            )
        return cls(
            settings.bigquery_project,
            dataset=settings.bigquery_dataset or None,
            location=settings.bigquery_location,
            endpoint=settings.bigquery_endpoint or None,
            credentials=credentials,
        )

    # -- names ------------------------------------------------------------------------------

    def table_id(self, table: str) -> str:
        """``project.dataset.name`` of a ``namespace.name`` table."""
        dataset, name = self._split(table)
        return f"{self.project}.{dataset}.{name}"

    def _split(self, table: str) -> tuple[str, str]:
        namespace, name = split_table(table)
        dataset = self.dataset or namespace
        if not _DATASET_RE.match(dataset):
            raise ParameterError(f"table {table}: {dataset!r} is not a BigQuery dataset name")
        if _BAD_NAME_CHARS.search(name) or len(name) > 1024:
            raise ParameterError(f"table {table}: {name!r} is not a BigQuery table name")
        return dataset, name

    @staticmethod
    def _quoted(table_id: str) -> str:
        return f"`{table_id}`"

    # -- loading ----------------------------------------------------------------------------

    def _replace(self, load: Load) -> int:
        """Load the files into staging tables, then in one transaction delete the slice from
        the target and insert the staged rows; the target is untouched when anything fails.

        ``evolve``: columns of ``schema`` the table lacks are added once every file is staged,
        just before the transaction (DDL cannot run in a BigQuery transaction): a load that
        fails while staging adds none; only a transaction failing after them leaves them there,
        empty. A ``RowIds`` slice's
        ids are staged too (a Parquet load job), so the DELETE joins against a table instead
        of a query text that grows with the ids.
        """
        table, schema, parquet_urls, lake, replaced, evolve = load
        check_slice(table, schema, replaced)
        fields = bigquery_schema(table, schema)
        dataset, _ = self._split(table)
        by_order: dict[tuple[str, ...], list[str]] = {}
        for url in parquet_urls:  # fail before any job on a missing or foreign file
            file_schema = parquet_schema(lake, url)
            check_file_schema(url, file_schema, schema, "bigquery")
            by_order.setdefault(tuple(file_schema.names), []).append(url)
        with self._lock, self._errors(f"loading {table} into BigQuery failed"):
            self._check_endpoint()
            location = self._ensure_dataset(dataset)
            target = self._ensure_table(table, fields, range_column(replaced), evolve)
            stages: list[str] = []
            try:
                loaded = 0
                for order, urls in by_order.items():
                    stage, stage_fields = self._create_stage(table, fields, order)
                    stages.append(stage)
                    self._load(stage, stage_fields, urls, lake, location)
                    loaded += self._rows(stage)
                ids = None
                if isinstance(replaced, RowIds) and replaced.ids:
                    ids = self._stage_ids(table, replaced, location)
                    stages.append(ids)
                if evolve:  # DDL, outside the transaction: only once everything is staged
                    target = self._add_columns(target, fields, location)
                data_stages = [stage for stage in stages if stage != ids]
                script = self._replace_script(target, fields, replaced, data_stages, ids)
                self._client.query(script, location=location, retry=self._retry).result(
                    retry=self._retry, timeout=self.job_timeout_s
                )
            finally:
                for stage in stages:  # never hide the error that got us here
                    with contextlib.suppress(Exception):
                        self._client.delete_table(stage, not_found_ok=True, retry=self._retry)
        return loaded

    def _ensure_dataset(self, dataset: str) -> str:
        """The dataset's location; created in ``self.location`` when missing.

        Looked up first: creating needs ``bigquery.datasets.create``, which a loader with
        rights on an existing dataset may not have.
        """
        if dataset in self._locations:
            return self._locations[dataset]
        ref = bigquery.DatasetReference(self.project, dataset)
        try:
            found = self._client.get_dataset(ref, retry=self._retry)
        except api_exceptions.NotFound:
            wanted = bigquery.Dataset(ref)
            wanted.location = self.location
            wanted.description = "Tables loaded by civiclake."
            found = self._client.create_dataset(wanted, exists_ok=True, retry=self._retry)
        self._locations[dataset] = found.location or self.location
        return self._locations[dataset]

    def _ensure_table(
        self,
        table: str,
        fields: list[bigquery.SchemaField],
        partition_by: str | None,
        evolve: bool,
    ) -> bigquery.Table:
        """The target table, created with the explicit schema (partitioned by month on the
        slice's date/time column) when missing; an existing one must have every column, unless
        ``evolve`` (then ``_add_columns`` adds them, after the staging loads)."""
        table_id = self.table_id(table)
        try:
            existing = self._client.get_table(table_id, retry=self._retry)
        except api_exceptions.NotFound:
            wanted = bigquery.Table(table_id, schema=fields)
            kind = next((f.field_type for f in fields if f.name == partition_by), None)
            if kind in _TIME_TYPES:  # a replace then rewrites one partition (the month)
                wanted.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.MONTH, field=partition_by
                )
            return self._client.create_table(wanted, exists_ok=True, retry=self._retry)
        if not evolve:
            have = {f.name: "" for f in existing.schema}
            self.check_columns(table, _names_schema(fields), have)
        return existing

    def _add_columns(
        self, existing: bigquery.Table, fields: list[bigquery.SchemaField], location: str
    ) -> bigquery.Table:
        """``ALTER TABLE ... ADD COLUMN`` for each new field (NULL in the rows already there).

        The table's metadata is then patched if it still lacks them: BigQuery's DDL updates
        both, the emulator only its storage (and a schema patch only its metadata).
        """
        known = {f.name.lower() for f in existing.schema}
        new = [f for f in fields if f.name.lower() not in known]
        if not new:
            return existing
        into = self._quoted(f"{existing.project}.{existing.dataset_id}.{existing.table_id}")
        for field in new:
            kind = _type_name(field).replace(", ", ",")
            self._client.query(
                f"ALTER TABLE {into} ADD COLUMN IF NOT EXISTS {_quote_column(field.name)} {kind}",
                location=location,
                retry=self._retry,
            ).result(retry=self._retry, timeout=self.job_timeout_s)
        table = self._client.get_table(existing.reference, retry=self._retry)
        have = {f.name.lower() for f in table.schema}
        if any(f.name.lower() not in have for f in new):
            table.schema = [*table.schema, *(f for f in new if f.name.lower() not in have)]
            table = self._client.update_table(table, ["schema"], retry=self._retry)
        return table

    def _create_stage(
        self, table: str, fields: list[bigquery.SchemaField], order: tuple[str, ...]
    ) -> tuple[str, list[bigquery.SchemaField]]:
        """A new, empty staging table beside the target, its columns in the files' order."""
        by_name = {f.name: f for f in fields}
        stage_fields = [by_name[name] for name in order]
        stage_id = f"{self.table_id(table)}__civiclake_stage_{uuid.uuid4().hex[:12]}"
        stage = bigquery.Table(stage_id, schema=stage_fields)
        stage.expires = datetime.now(UTC) + STAGING_TTL  # a crashed run cleans up after itself
        stage.labels = {"civiclake": "staging"}
        self._client.create_table(stage, retry=self._retry)
        return stage_id, stage_fields

    def _load(
        self,
        stage_id: str,
        stage_fields: list[bigquery.SchemaField],
        urls: list[str],
        lake: Lake,
        location: str,
    ) -> None:
        """Load jobs appending every row of ``urls`` to the staging table."""
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=stage_fields,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        if all(scheme_of(url) == "gs" for url in urls):  # BigQuery reads GCS itself
            job = self._client.load_table_from_uri(
                urls, stage_id, job_config=config, location=location, retry=self._retry
            )
            job.result(retry=self._retry, timeout=self.job_timeout_s)
            return
        for url in urls:
            with lake.open(url) as handle:  # a resumable upload, chunk by chunk
                job = self._client.load_table_from_file(
                    handle, stage_id, job_config=config, location=location
                )
            job.result(retry=self._retry, timeout=self.job_timeout_s)

    def _rows(self, table_id: str) -> int:
        """Rows of a table after its load jobs (exact: no streaming buffer is involved)."""
        return int(self._client.get_table(table_id, retry=self._retry).num_rows or 0)

    def _stage_ids(self, table: str, replaced: RowIds, location: str) -> str:
        """The slice's ids in a staging table of one STRING column ``id``."""
        fields = [bigquery.SchemaField("id", "STRING")]
        stage_id, _ = self._create_stage(table, fields, ("id",))
        out = io.BytesIO()
        pq.write_table(pa.table({"id": pa.array(sorted(replaced.ids), pa.string())}), out)
        out.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=fields,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        job = self._client.load_table_from_file(out, stage_id, job_config=config, location=location)
        job.result(retry=self._retry, timeout=self.job_timeout_s)
        return stage_id

    def _replace_script(
        self,
        target: bigquery.Table,
        fields: list[bigquery.SchemaField],
        replaced: Slice,
        stages: list[str],
        ids: str | None,
    ) -> str:
        """One transaction: BigQuery rolls it back by itself if any statement fails."""
        kinds = {f.name: f.field_type for f in fields}
        column = getattr(replaced, "column", "")

        def bind(value: datetime | date) -> str:
            return _literal(value, kinds.get(column, ""))

        def member(quoted: str, _: RowIds) -> str:
            key = quoted if kinds.get(column) == "STRING" else f"CAST({quoted} AS STRING)"
            return f"{key} IN (SELECT id FROM {self._quoted(ids or '')})"

        into = self._quoted(f"{target.project}.{target.dataset_id}.{target.table_id}")
        columns = ", ".join(_quote_column(f.name) for f in fields)
        lines = ["BEGIN TRANSACTION;"]
        where = slice_condition(replaced, _quote_column, bind, member)
        if where is not None:
            lines.append(f"DELETE FROM {into} WHERE {where};")
        lines += [
            f"INSERT INTO {into} ({columns}) SELECT {columns} FROM {self._quoted(stage)};"
            for stage in stages
        ]
        lines.append("COMMIT TRANSACTION;")
        return "\n".join(lines)

    # -- reading ----------------------------------------------------------------------------

    def column_types(self, table: str) -> dict[str, str]:
        """Column -> standard SQL type name (``INT64``, ``NUMERIC(10, 2)``); {} if missing."""
        with self._lock, self._errors(f"cannot read the columns of {table} in BigQuery"):
            self._check_endpoint()
            try:
                found = self._client.get_table(self.table_id(table), retry=self._retry)
            except api_exceptions.NotFound:
                return {}
        return {field.name: _type_name(field) for field in found.schema}

    def count(self, table: str, where: str | None = None) -> int:
        dataset, _ = self._split(table)
        sql = f"SELECT COUNT(*) FROM {self._quoted(self.table_id(table))}"
        sql += f" WHERE {where}" if where else ""
        with self._lock, self._errors(f"cannot count {table} in BigQuery"):
            self._check_endpoint()
            location = self._locations.get(dataset) or self._dataset_location(dataset)
            rows = self._client.query(sql, location=location, retry=self._retry).result(
                retry=self._retry, timeout=self.job_timeout_s
            )
            return int(next(iter(rows))[0])

    def _dataset_location(self, dataset: str) -> str:
        found = self._client.get_dataset(
            bigquery.DatasetReference(self.project, dataset), retry=self._retry
        )
        self._locations[dataset] = found.location or self.location
        return self._locations[dataset]

    # -- doctor -----------------------------------------------------------------------------

    def check(self) -> str:
        """Prove a run can work: the dataset is there (created if missing, as a run would),
        a table can be created, queried by a job (dry run, free) and deleted."""
        dataset = self.dataset or CHECK_NAMESPACE
        probe = f"{self.project}.{dataset}._civiclake_probe_{uuid.uuid4().hex[:12]}"
        with self._lock, self._errors(f"BigQuery {self.project}.{dataset}"):
            self._check_endpoint()
            location = self._ensure_dataset(dataset)
            table = bigquery.Table(probe, schema=[bigquery.SchemaField("probe", "STRING")])
            table.expires = datetime.now(UTC) + timedelta(hours=1)
            self._client.create_table(table, retry=self._retry)
            try:
                config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
                self._client.query(
                    f"SELECT COUNT(*) FROM {self._quoted(probe)}",
                    job_config=config,
                    location=location,
                    retry=self._retry,
                )
            finally:
                self._client.delete_table(probe, not_found_ok=True, retry=self._retry)
        where = f" via {self.endpoint}" if self.endpoint else ""
        return (
            f"BigQuery {self.project}.{dataset} ({location}){where}: table created, "
            f"queried (dry run) and deleted; credentials: {self.credential_source}"
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _check_endpoint(self) -> None:
        """A custom endpoint (an emulator) that nothing listens on fails in seconds instead
        of after a minute of retried connection errors."""
        if self._endpoint_checked or not self.endpoint:
            return
        dead = unreachable(self.endpoint)
        if dead:
            raise CivicLakeError(
                f"cannot connect to the BigQuery endpoint {dead} "
                "(CIVICLAKE_BIGQUERY_ENDPOINT; is the emulator running?)"
            )
        self._endpoint_checked = True

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Google's and the network's errors as one line naming what failed."""
        try:
            yield
        except CivicLakeError:
            raise
        except (
            api_exceptions.GoogleAPIError,
            google.auth.exceptions.GoogleAuthError,
            requests.RequestException,
            concurrent.futures.TimeoutError,
            OSError,
            pa.ArrowException,
        ) as exc:
            raise CivicLakeError(f"{doing}: {self._reason(exc)}") from exc

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
            return self._reason(exc.cause) + " (gave up retrying)"
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            message = _HTTP_PREFIX.sub("", one_line(exc.message or "")) or type(exc).__name__
            message = message.split("; reason: ")[0]  # job errors repeat themselves after this
            if isinstance(exc, api_exceptions.Forbidden):
                return f"permission denied: {message}"
            return message
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return (
                "the Google credentials were refused (expired or revoked?): run `gcloud auth "
                "application-default login` or check GOOGLE_APPLICATION_CREDENTIALS"
            )
        if isinstance(exc, (requests.ConnectionError, google.auth.exceptions.TransportError)):
            return f"cannot connect to the BigQuery API at {self.endpoint or DEFAULT_API_HOST}"
        if isinstance(exc, concurrent.futures.TimeoutError):
            return f"no answer within {self.job_timeout_s:.0f} s"
        return one_line(str(exc)) or type(exc).__name__

    def close(self) -> None:
        self._client.close()


def _quote_column(name: str) -> str:
    return f"`{name}`"  # bigquery_schema refused backticks, backslashes and newlines


def _literal(value: datetime | date, column_type: str) -> str:
    """A typed SQL literal of a range bound. Naive datetimes are UTC, as in the lake; a day
    bounding a DATETIME or TIMESTAMP column means its midnight (UTC)."""
    if not isinstance(value, datetime) and column_type in ("DATETIME", "TIMESTAMP"):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        utc = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        text = utc.isoformat(sep=" ")
        if column_type == "TIMESTAMP":
            return f"TIMESTAMP '{text}+00'"
        return f"DATETIME '{text}'"
    return f"DATE '{value.isoformat()}'"


def _names_schema(fields: list[bigquery.SchemaField]) -> pa.Schema:
    """Only the names matter to ``check_columns``."""
    return pa.schema([(f.name, pa.null()) for f in fields])


def _type_name(field: bigquery.SchemaField) -> str:
    """The standard SQL spelling: the REST API reports legacy names (INTEGER, FLOAT)."""
    kind = _STANDARD_NAMES.get(field.field_type, field.field_type)
    if kind in ("NUMERIC", "BIGNUMERIC") and field.precision is not None:
        return f"{kind}({field.precision}, {field.scale or 0})"
    if field.mode == "REPEATED":
        return f"ARRAY<{kind}>"
    return kind
