from pathlib import Path

import pytest

from civiclake.lake import Lake


def test_write_and_list(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    url = lake.join("raw", "x", "page-000001.json")
    lake.write_bytes(url, b"[]")
    assert lake.read_bytes(url) == b"[]"
    assert lake.list(lake.join("raw", "x")) == [url]
    assert lake.list(lake.join("raw", "missing")) == []


def test_failed_write_leaves_nothing_visible(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    url = lake.join("raw", "half.json")
    with pytest.raises(RuntimeError), lake.open_atomic(url) as out:
        out.write(b"[{")
        raise RuntimeError("crash mid-write")
    assert not lake.exists(url)
    assert list((tmp_path / "raw").iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    url = lake.join("a.json")
    lake.write_bytes(url, b"old")
    with pytest.raises(RuntimeError), lake.open_atomic(url) as out:
        out.write(b"new-but-incomplete")
        raise RuntimeError
    assert lake.read_bytes(url) == b"old"


def test_copy_from(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"a,b\n1,2\n" * 1000)
    lake = Lake((tmp_path / "lake").as_uri())
    url = lake.join("raw", "in.csv")
    lake.copy_from(str(source), url)
    assert lake.read_bytes(url) == source.read_bytes()


def test_memory_lake_is_not_local() -> None:
    lake = Lake("memory://lake-test")
    url = lake.join("raw", "p.json")
    lake.write_bytes(url, b"[1]")
    assert lake.read_bytes(url) == b"[1]"
    assert lake.list(lake.join("raw")) == ["memory://lake-test/raw/p.json"]
