"""``Lake.open_atomic`` on every store: a write that raises part-way leaves no object, no
partial object and no unfinished upload; the previous object, if any, stays as it was.

fsspec's buffered files complete their upload on close even when the ``with`` block raised,
so on S3 a failed download used to appear whole-looking under its final name (seen on moto).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from civiclake.lake import Lake
from testsupport.objectstores import ObjectStore, _s3_client, use_env

pytestmark = pytest.mark.slow  # the object-store emulators

PART = 5 * 2**20  # the smallest S3 multipart part: big writes really go up in parts
BIG_OPTIONS = {"s3": {"default_block_size": PART}, "azure": {"blocksize": PART}, "gcs": {}}


class Interrupted(Exception):
    """The failure in the middle of a write (a cut-off download, a crashed converter)."""


def _write_then_fail(lake: Lake, url: str, chunks: list[bytes]) -> None:
    with pytest.raises(Interrupted), lake.open_atomic(url) as out:
        for chunk in chunks:
            out.write(chunk)
        raise Interrupted


def _fresh_lake(store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lake:
    use_env(monkeypatch, tmp_path, store.env)
    return Lake(store.lake_url(f"atomic-{uuid.uuid4().hex[:8]}"), **BIG_OPTIONS[store.kind])


def _keys(store: ObjectStore, lake: Lake) -> list[str]:
    prefix = lake.url.split("://", 1)[1].split("/", 1)[1]
    return store.list_objects(prefix + "/")


def test_a_failed_small_write_leaves_no_object(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lake = _fresh_lake(store, monkeypatch, tmp_path)
    url = lake.join("raw", "download.csv.gz")
    _write_then_fail(lake, url, [b"first half of a download"])
    assert not lake.exists(url)
    assert _keys(store, lake) == []


def test_a_failed_multipart_write_leaves_no_object_and_no_upload(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lake = _fresh_lake(store, monkeypatch, tmp_path)
    url = lake.join("stage", "big.parquet")
    # three parts' worth: the driver has already sent parts to the store when the write fails
    _write_then_fail(lake, url, [bytes([i]) * 2**20 for i in range(3 * PART // 2**20 + 1)])
    assert not lake.exists(url)
    assert _keys(store, lake) == []
    if store.kind == "s3":  # the multipart upload was aborted, not left to accrue storage
        client = _s3_client(store.env, "s3")
        pending = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        assert [u["Key"] for u in pending if u["Key"].startswith(lake.url.split("/", 3)[3])] == []


def test_a_failed_rewrite_keeps_the_previous_object(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lake = _fresh_lake(store, monkeypatch, tmp_path)
    url = lake.join("raw", "page-000001.json")
    lake.write_bytes(url, b'[{"whole": "previous page"}]')
    _write_then_fail(lake, url, [b'[{"half": '])
    assert lake.read_bytes(url) == b'[{"whole": "previous page"}]'
    assert len(_keys(store, lake)) == 1


def test_a_completed_write_appears_whole(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lake = _fresh_lake(store, monkeypatch, tmp_path)
    url = lake.join("stage", "big.parquet")
    data = [bytes([i]) * 2**20 for i in range(PART // 2**20 + 2)]
    with lake.open_atomic(url) as out:
        for chunk in data:
            out.write(chunk)
    assert lake.read_bytes(url) == b"".join(data)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_local_and_memory_lakes_too(scheme: str, tmp_path: Path) -> None:
    root = tmp_path.as_uri() if scheme == "file" else f"memory://atomic-{uuid.uuid4().hex[:8]}"
    lake = Lake(root)
    url = lake.join("raw", "download.csv.gz")
    _write_then_fail(lake, url, [b"first half of a download"])
    assert not lake.exists(url)
    assert lake.list(lake.join("raw")) == []
    lake.write_bytes(url, b"whole")
    _write_then_fail(lake, url, [b"half"])
    assert lake.read_bytes(url) == b"whole"
    assert lake.list(lake.join("raw")) == [url]
