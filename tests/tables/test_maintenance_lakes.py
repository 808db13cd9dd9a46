"""Table operations on every object-store lake (Azurite, moto, the GCS emulator): maintain
keeps a killed load's young orphans and removes them with ``--orphans-older-than 0``, rows stay
byte-for-byte, time travel and rollback work, on the B&T table and its rejects table."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from table_support import FIRST_DAY, ROWS_PER_DAY, cli, cli_json, full_rows, warehouse_files

from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.testing.socrata import SocrataServer
from testsupport import bnt_daily
from testsupport.objectstores import ObjectStore, use_env

pytestmark = pytest.mark.slow
TABLES = (bnt.TABLE, bnt.REJECTS_TABLE)


class Killed(BaseException):
    """The load process dying at its catalog commit."""


def test_maintain_time_travel_and_rollback_on_a_cloud_lake(
    store: ObjectStore,
    socrata: SocrataServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    use_env(monkeypatch, tmp_path, store.env)
    monkeypatch.setenv("CIVICLAKE_LAKE_URL", store.lake_url(f"m-{uuid.uuid4().hex[:8]}"))
    settings = get_settings()
    loads = [bnt_daily.load_day(settings, socrata, FIRST_DAY, d) for d in range(3)]
    rows = {name: full_rows(name) for name in TABLES}
    known = set(warehouse_files())

    def die(*args: object, **kwargs: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(SqlCatalog, "commit_table", die)
        with pytest.raises(Killed):
            bnt_daily.load_day(settings, socrata, FIRST_DAY, 3)
    orphans = set(warehouse_files()) - known
    assert any(p.endswith(".parquet") for p in orphans)

    reports = {
        r["table"]: r for r in cli_json("maintain", "--retain-days", "0", "--retain-last", "2")
    }
    for name in TABLES:
        assert reports[name]["snapshots_kept"] == 2 and reports[name]["files_removed"] > 0
        assert full_rows(name).equals(rows[name])
    assert reports[bnt.TABLE]["orphans_kept_young"] >= 1
    assert orphans <= set(warehouse_files())  # young: kept

    swept = {r["table"]: r for r in cli_json("maintain", "--orphans-older-than", "0")}
    assert sum(r["orphans_removed"] for r in swept.values()) >= len(orphans)
    assert not orphans & set(warehouse_files())
    for name in TABLES:
        assert full_rows(name).equals(rows[name])

    current = cli_json(
        "sql",
        "SELECT count(*) AS n FROM mta.bnt_traffic_hourly",
        "--as-of",
        str(loads[-1].snapshot_id),
    )
    assert current == [{"n": 3 * ROWS_PER_DAY}]
    expired = cli(
        "sql", "SELECT 1 FROM mta.bnt_traffic_hourly", "--as-of", str(loads[0].snapshot_id)
    )
    assert expired.exit_code == 2 and "expired by `civiclake maintain`" in expired.output

    for name in TABLES:  # roll each table back to the kept parent, then load again
        history = cli_json("history", name)
        assert len(history) == 2
        done = cli("rollback", name, "--to", str(history[1]["snapshot_id"]), "--yes")
        assert done.exit_code == 0, done.output
        assert full_rows(name).num_rows == history[1]["total_rows"]
    again = bnt_daily.load_day(settings, socrata, FIRST_DAY, 3)
    assert again.rows == 4 * ROWS_PER_DAY
