"""tlc.taxi_zones: where the lookup comes from (mirror, a file next to --from-file, nothing)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from civiclake import tables
from civiclake.config import Settings, get_settings
from civiclake.errors import SourceError
from civiclake.sources import tlc_zones
from testsupport.files import FileServer

LOOKUP = Path(__file__).resolve().parents[3] / "shared" / "data" / "tlc" / tlc_zones.FILE_NAME
ZONES_PATH = "/misc/taxi_zone_lookup.csv"


@pytest.mark.parametrize(
    ("tlc_url", "zones"),
    [
        (
            "https://github.com/DataTalksClub/nyc-tlc-data/releases/download",
            "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/misc/taxi_zone_lookup.csv",
        ),
        (
            "https://d37ci6vzurychx.cloudfront.net/trip-data/{color}_tripdata_{yyyy}-{mm}.parquet",
            "https://d37ci6vzurychx.cloudfront.net/misc/taxi_zone_lookup.csv",
        ),
        (
            "http://127.0.0.1:9/{color}/{color}_tripdata_{yyyy}-{mm}.csv.gz",
            "http://127.0.0.1:9/misc/taxi_zone_lookup.csv",
        ),
    ],
)
def test_the_lookup_sits_at_the_mirror_root(tlc_url: str, zones: str) -> None:
    assert tlc_zones.zones_url(Settings(tlc_url=tlc_url)) == zones
    assert tlc_zones.zones_url(Settings(tlc_url=tlc_url, tlc_zones_url="x://y")) == "x://y"


def test_loaded_once_from_the_mirror(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "misc").mkdir()
    shutil.copy(LOOKUP, tmp_path / "misc" / tlc_zones.FILE_NAME)
    with FileServer(tmp_path) as mirror:
        settings = get_settings(tlc_url=mirror.url)
        first = tlc_zones.ensure(settings, run_id="r1", from_file=None)
        assert (first["status"], first["rows"]) == ("loaded", 265)
        assert tlc_zones.ensure(settings, run_id="r2", from_file=None) == {"status": "present"}
        assert mirror.gets(ZONES_PATH) == 1  # the second run asked for nothing
    zones = tables.load_catalog(settings).load_table(tlc_zones.TABLE).scan().to_arrow()
    assert zones.schema == tlc_zones.SCHEMA
    row = zones.filter(zones.column("locationid").to_numpy() == 1).to_pylist()[0]
    assert (row["borough"], row["zone"]) == ("EWR", "Newark Airport")


def test_missing_lookup_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FileServer(tmp_path) as mirror, caplog.at_level(logging.WARNING):
        settings = get_settings(tlc_url=mirror.url)
        assert tlc_zones.ensure(settings, run_id="r", from_file=None) == {"status": "missing"}
        month = tmp_path / "green_tripdata_2020-10.csv.gz"  # no lookup next to it
        assert tlc_zones.ensure(settings, run_id="r", from_file=str(month)) == {"status": "missing"}
        assert mirror.gets(ZONES_PATH) == 0  # 404 once; --from-file never asks
    assert "HTTP 404" in caplog.text
    assert "no taxi_zone_lookup.csv next to" in caplog.text
    assert not tables.load_catalog(settings).table_exists(tlc_zones.TABLE)


def test_a_file_that_is_not_the_lookup_is_refused() -> None:
    with pytest.raises(SourceError, match="missing column"):
        tlc_zones.parse(b"a,b\n1,2\n")
