"""Table locks with real processes: a holder's death frees the lock at once, a waiting run
says whom it waits for and gives up with one line, and two lakes' same-named tables do not
block each other."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from civiclake.config import get_settings
from civiclake.errors import CivicLakeError
from civiclake.flows._locks import lock_path, read_holder, table_lock, uses_file_lock

TABLE = "mta.bnt_traffic_hourly"
HOLD = textwrap.dedent(
    """
    import sys, time
    from civiclake.config import get_settings
    from civiclake.flows._locks import table_lock
    with table_lock(sys.argv[1], get_settings()):
        print("held", flush=True)
        time.sleep(600)
    """
)


def hold(table: str = TABLE, **env: str) -> subprocess.Popen[str]:
    """Another process holding ``table``'s lock, with the test's environment plus ``env``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, table],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def acquire(**overrides: object) -> bool:
    """Take and give back TABLE's lock in this process; True when it was had."""
    with table_lock(TABLE, get_settings(**overrides)):
        return True


def test_a_waiting_run_names_the_holder_then_gives_up_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    holder = hold()
    try:
        assert read_holder(lock_path(TABLE, get_settings()))["pid"] == holder.pid
        monkeypatch.setenv("CIVICLAKE_LOCK_TIMEOUT", "1.5")
        with (
            caplog.at_level(logging.WARNING, logger="civiclake.locks"),
            pytest.raises(CivicLakeError) as raised,
        ):
            acquire()
    finally:
        holder.kill()
        holder.wait()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{TABLE} (catalog civiclake) is locked by pid {holder.pid} on ")
    assert "gave up after 1.5 s of waiting (CIVICLAKE_LOCK_TIMEOUT)" in message
    waiting = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
    assert waiting and f"held by pid {holder.pid} on " in waiting[0] and " since " in waiting[0]


def test_sigkill_of_the_holder_frees_the_lock_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = hold()
    holder.kill()  # no cleanup runs: the kernel releases the flock with the process
    holder.wait()
    monkeypatch.setenv("CIVICLAKE_LOCK_TIMEOUT", "0.5")  # held: this would fail in 0.5 s
    assert acquire()
    assert read_holder(lock_path(TABLE, get_settings())) is None  # released, holder cleared


def test_same_named_tables_of_two_lakes_do_not_block_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, civiclake_home: Path
) -> None:
    other_lake = (tmp_path / "other-lake").as_uri()
    holder = hold()  # the default lake's table
    try:
        monkeypatch.setenv("CIVICLAKE_LOCK_TIMEOUT", "0.5")
        assert acquire(lake_url=other_lake)  # same catalog file, another lake: free
        assert acquire(home=tmp_path / "another-home")  # another catalog file: free
        with pytest.raises(CivicLakeError, match="is locked by"):
            acquire()  # the same table of the same lake: taken
    finally:
        holder.kill()
        holder.wait()
    other = hold(CIVICLAKE_LAKE_URL=other_lake)  # and the other way round
    try:
        assert acquire()
    finally:
        other.kill()
        other.wait()
    assert lock_path(TABLE, get_settings()) != lock_path(TABLE, get_settings(lake_url=other_lake))


def test_threads_of_one_process_exclude_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """TLC months load in threads: each takes the table's lock on its own open file."""
    monkeypatch.setenv("CIVICLAKE_LOCK_TIMEOUT", "0.5")
    with table_lock(TABLE, get_settings()), pytest.raises(CivicLakeError, match="is locked"):
        acquire()


def test_which_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SQLite catalog always takes file locks (everyone sharing it is on this machine); a
    catalog server takes Prefect's limit only with a long-running Prefect server."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    server_catalog = {"catalog_uri": "postgresql://u@db.example/catalog"}
    assert uses_file_lock(get_settings())
    assert uses_file_lock(get_settings(**server_catalog))
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api")
    assert uses_file_lock(get_settings())
    assert not uses_file_lock(get_settings(**server_catalog))


def test_a_rejects_table_is_covered_by_its_tables_lock() -> None:
    from civiclake.flows._locks import covering_table

    assert covering_table("mta.bnt_traffic_hourly_rejects") == "mta.bnt_traffic_hourly"
    assert covering_table("tlc.green_trips_rejects") == "tlc.green_trips"
    assert covering_table("tlc.green_trips") == "tlc.green_trips"
    assert covering_table("ns._rejects") == "ns._rejects"  # no table to cover it
