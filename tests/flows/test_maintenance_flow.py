"""The ``civiclake-maintenance`` flow for real (temporary Prefect server): it maintains every
table under the loads' per-table lock and publishes a summary artifact."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import pytest

from civiclake import tables
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.testing.socrata import SocrataServer
from testsupport import bnt_daily

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]
FIRST_DAY = date(2024, 1, 10)


def test_maintenance_flow_expires_under_the_table_locks(
    monkeypatch: pytest.MonkeyPatch, civiclake_home: Path
) -> None:
    from prefect.client.orchestration import get_client

    from civiclake.flows._locks import lock_path, read_holder
    from civiclake.flows.maintenance import civiclake_maintenance

    with SocrataServer({}) as server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        for day in range(3):
            bnt_daily.load_day(get_settings(), server, FIRST_DAY, day)
    catalog = tables.load_catalog(get_settings())
    rows = catalog.load_table(bnt.TABLE).scan().to_arrow().num_rows

    dry = civiclake_maintenance(retain_days=0, retain_last=2, dry_run=True)
    assert [r["table"] for r in dry] == [bnt.TABLE, bnt.REJECTS_TABLE]
    assert all(r["dry_run"] and r["snapshots_expired"] > 0 for r in dry)
    assert len(catalog.load_table(bnt.TABLE).metadata.snapshots) > 2  # nothing changed

    reports = civiclake_maintenance(retain_days=0, retain_last=2, tables=[bnt.TABLE])
    assert [r["table"] for r in reports] == [bnt.TABLE]
    assert reports[0]["snapshots_kept"] == 2 and reports[0]["files_removed"] > 0
    table = catalog.load_table(bnt.TABLE)
    assert len(table.metadata.snapshots) == 2 and table.scan().to_arrow().num_rows == rows
    assert len(catalog.load_table(bnt.REJECTS_TABLE).metadata.snapshots) > 2  # not named

    lock = lock_path(bnt.TABLE, get_settings())  # an SQLite catalog: a file lock
    assert lock.exists() and read_holder(lock) is None  # taken, and given back
    # the whole lake: old raw and stage load folders go too, the latest of each series stays
    old = Path(bnt.stage_dir(get_settings().lake(), "old-run").removeprefix("file://"))
    old.mkdir(parents=True)
    (old / "valid.parquet").write_bytes(b"x")
    os.utime(old / "valid.parquet", (time.time() - 9 * 86_400,) * 2)
    stage = old.parent
    runs = len(list(stage.iterdir()))
    civiclake_maintenance(retain_days=0, retain_last=2, dry_run=True)
    assert (old / "valid.parquet").exists()
    civiclake_maintenance(retain_days=0, retain_last=2, raw_retain_days=7)
    assert not old.exists() and len(list(stage.iterdir())) == runs - 1
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    assert any(a.key == "civiclake-maintenance-summary" for a in artifact)


def test_weekly_deployment_runs_this_flow_with_valid_parameters() -> None:
    import yaml
    from prefect.exceptions import ParameterTypeError

    from civiclake.flows.maintenance import FLOW_NAME, civiclake_maintenance

    spec = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    (weekly,) = [d for d in spec["deployments"] if d["name"] == "weekly"]
    path, _, name = weekly["entrypoint"].partition(":")
    assert (
        path == "src/civiclake/flows/maintenance.py" and name == civiclake_maintenance.fn.__name__
    )
    assert civiclake_maintenance.name == FLOW_NAME == "civiclake-maintenance"
    assert weekly["enforce_parameter_schema"] is True
    assert weekly["schedules"][0]["cron"] == "30 5 * * 0"
    civiclake_maintenance.validate_parameters(weekly["parameters"])
    with pytest.raises(ParameterTypeError):
        civiclake_maintenance.validate_parameters({"orphans_older_than": "3 weeks"})


HOLD_LOCK = """
import sys, time
from civiclake.config import get_settings
from civiclake.flows._locks import table_lock
with table_lock(sys.argv[1], get_settings()):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_rejects_table_is_maintained_under_its_tables_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loads commit ``X_rejects`` under ``X``'s lock: the flow maintains it under that lock."""
    import subprocess
    import sys

    import pyarrow as pa
    from pyiceberg.expressions import AlwaysTrue

    from civiclake.errors import CivicLakeError
    from civiclake.flows.maintenance import civiclake_maintenance

    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table_for(catalog, "ns.trips_rejects", pa.schema([("n", pa.int64())]))
    for n in range(3):
        data = pa.table({"n": pa.array([n], pa.int64())})
        tables.replace_range(table, AlwaysTrue(), lambda data=data: [data], {"run-id": "r"})
    before = len(catalog.load_table("ns.trips_rejects").metadata.snapshots)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, "ns.trips"], env=os.environ, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("CIVICLAKE_LOCK_TIMEOUT", "1")
        with pytest.raises(CivicLakeError, match=r"ns\.trips \(catalog civiclake\) is locked"):
            civiclake_maintenance(retain_days=0, retain_last=1, tables=["ns.trips_rejects"])
        assert len(catalog.load_table("ns.trips_rejects").metadata.snapshots) == before
    finally:
        holder.kill()
        holder.wait()
    civiclake_maintenance(retain_days=0, retain_last=1, tables=["ns.trips_rejects"])
    assert len(catalog.load_table("ns.trips_rejects").metadata.snapshots) == 1
