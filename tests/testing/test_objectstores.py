"""The object-store emulators, reached the way a user would: standard env vars only.

One emulator of each kind per session. Every test starts from an environment without any
AWS / Azure / Google variables, sets the store's ``env`` (or ``bad_env``) and then uses
fsspec, PyIceberg or DuckDB with no endpoint or credential arguments of its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testsupport.objectstores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    ObjectStore,
    gcs_emulator,
    use_env,
)

pytestmark = pytest.mark.slow  # three emulator starts (~6 s) and a dozen remote round trips

KINDS = ("azure", "s3", "gcs")
_STORE_VARS = ("AWS_", "AZURE_", "GOOGLE_", "GCSFS_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST")
FSSPEC_IO = "pyiceberg.io.fsspec.FsspecFileIO"
ARROW_IO = "pyiceberg.io.pyarrow.PyArrowFileIO"


def test_store_description(
    azure_store: ObjectStore, s3_store: ObjectStore, gcs_store: ObjectStore
) -> None:
    assert azure_store.lake_url("wh/x/") == f"abfs://{azure_store.bucket}/wh/x"
    assert s3_store.lake_url("/wh") == f"s3://{s3_store.bucket}/wh"
    assert gcs_store.lake_url("") == f"gs://{gcs_store.bucket}"
    for store in (azure_store, s3_store, gcs_store):
        assert store.endpoint.startswith("http://127.0.0.1:")
        assert set(store.env) == set(store.bad_env)
        assert store.env != store.bad_env
    assert AZURITE_KEY in azure_store.secrets() and len(azure_store.secrets()) == 2
    assert s3_store.secrets() == [
        s3_store.env["AWS_SECRET_ACCESS_KEY"],
        s3_store.bad_env["AWS_SECRET_ACCESS_KEY"],
    ]
    assert gcs_store.secrets() == []  # the emulator takes no credentials


def test_fsspec_round_trip_from_env(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fsspec.core import url_to_fs

    use_env(monkeypatch, tmp_path, store.env)
    fs, path = url_to_fs(store.lake_url("fsspec/round-trip/hello.txt"))
    with fs.open(path, "wb") as handle:
        handle.write(b"hello lake")

    assert fs.cat_file(path) == b"hello lake"
    assert fs.ls(path.rsplit("/", 1)[0], detail=False) == [path]
    assert store.list_objects("fsspec/round-trip/") == ["fsspec/round-trip/hello.txt"]
    fs.rm(path)
    assert store.list_objects("fsspec/round-trip/") == []


def _iceberg_props(store: ObjectStore, io: str) -> dict[str, str]:
    """The catalog properties each FileIO needs beyond ``store.env`` (found by trying)."""
    if store.kind == "azure" and io == ARROW_IO:
        # pyarrow's AzureFileSystem ignores AZURE_STORAGE_CONNECTION_STRING
        authority = store.endpoint.split("//", 1)[1].split("/", 1)[0]
        return {
            "py-io-impl": io,
            "adls.account-name": AZURITE_ACCOUNT,
            "adls.account-key": AZURITE_KEY,
            "adls.blob-storage-authority": authority,
            "adls.blob-storage-scheme": "http",
            "adls.dfs-storage-authority": authority,
            "adls.dfs-storage-scheme": "http",
        }
    if store.kind == "s3" and io == ARROW_IO:
        # pyarrow's S3FileSystem ignores AWS_ENDPOINT_URL; without s3.region PyIceberg asks
        # AWS for the bucket's region (seconds lost offline, then a warning)
        return {"s3.endpoint": store.endpoint, "s3.region": store.env["AWS_REGION"]}
    if store.kind == "gcs" and io == ARROW_IO:
        # pyarrow's GcsFileSystem ignores STORAGE_EMULATOR_HOST and hangs looking for
        # credentials; a token needs an expiry with it
        return {
            "gcs.service.host": store.endpoint,
            "gcs.oauth2.token": "anon",
            "gcs.oauth2.token-expires-at": str(4_102_444_800_000),  # 2100-01-01
        }
    # FsspecFileIO reads everything from env; it is only the default for abfs://
    return {} if store.kind == "azure" else {"py-io-impl": FSSPEC_IO}


@pytest.mark.parametrize("io", [FSSPEC_IO, ARROW_IO], ids=["fsspec-io", "pyarrow-io"])
def test_pyiceberg_table_from_env(
    store: ObjectStore, io: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    use_env(monkeypatch, tmp_path, store.env)
    prefix = f"iceberg-{io.rsplit('.', 1)[1]}"
    catalog = SqlCatalog(
        "t",
        uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=store.lake_url(prefix),
        **_iceberg_props(store, io),
    )
    catalog.create_namespace("ns")
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})
    table = catalog.create_table("ns.rows", schema=rows.schema)
    assert type(table.io).__name__ == io.rsplit(".", 1)[1]
    table.append(rows)

    read = catalog.load_table("ns.rows").scan().to_arrow()
    assert read.sort_by("id").to_pydict() == rows.to_pydict()
    keys = store.list_objects(f"{prefix}/ns/rows/")
    assert any(key.endswith(".metadata.json") for key in keys)
    assert any(
        key.startswith(f"{prefix}/ns/rows/data/") and key.endswith(".parquet") for key in keys
    )


def _no_gcsfs_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """gcsfs retries 6 times with 1+2+4+8+16 s of sleep (~34 s), and no setting changes it."""
    import gcsfs.retry

    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr(gcsfs.retry, "asyncio", SimpleNamespace(sleep=no_sleep))


BAD_ENV_FAILURE: dict[str, tuple[type[BaseException], str]] = {
    # adlfs wraps the SDK's HttpResponseError (ErrorCode:AuthorizationFailure), no retries
    "azure": (RuntimeError, "Server failed to authenticate the request"),
    # s3fs turns botocore's ClientError(SignatureDoesNotMatch) into PermissionError
    "s3": (PermissionError, "signature"),
    # nothing listens: aiohttp.ClientConnectorError (an OSError), after gcsfs's retries
    "gcs": (OSError, "Cannot connect to host"),
}


def test_bad_env_write_fails_fast(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fsspec.core import url_to_fs

    if store.kind == "gcs":
        _no_gcsfs_backoff(monkeypatch)
    use_env(monkeypatch, tmp_path, store.bad_env)
    error, message = BAD_ENV_FAILURE[store.kind]
    started = time.monotonic()
    fs, path = url_to_fs(store.lake_url("bad-env/never.txt"))
    with pytest.raises(error, match=f"(?i){message}"), fs.open(path, "wb") as handle:
        handle.write(b"must not land")
    assert time.monotonic() - started < 15
    assert store.list_objects("bad-env/") == []


def test_duckdb_reads_through_registered_fsspec(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DuckDB reads abfs:// s3:// gs:// through a registered fsspec filesystem.

    Without it, s3:// and gs:// go to DuckDB's httpfs extension, which it cannot download here.
    """
    import duckdb
    from fsspec.core import url_to_fs

    use_env(monkeypatch, tmp_path, store.env)
    url = store.lake_url("duckdb/part-0.parquet")
    fs, path = url_to_fs(url)
    with fs.open(path, "wb") as handle:
        pq.write_table(pa.table({"x": [1, 2, 3]}), handle)

    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.register_filesystem(fs)
    total = con.execute(f"SELECT sum(x) FROM read_parquet('{url}')").fetchone()
    assert total == (6,)
    glob = store.lake_url("duckdb/*.parquet")
    assert con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone() == (3,)
    con.close()
    fs.rm(path)


def test_emulator_stops_and_cleans_up() -> None:
    """Leaving the context ends the process (port closed) even when the body raises."""
    import socket

    seen: list[ObjectStore] = []
    with pytest.raises(RuntimeError, match="boom"), gcs_emulator("scratch") as store:
        seen.append(store)
        raise RuntimeError("boom")
    port = int(seen[0].endpoint.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
