"""Write and commit as two steps: data files written by one process (an engine's worker, a
killed run) and committed by another; exactly once, nothing visible before the commit."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from test_replace_range import rows_for

from civiclake import tables
from civiclake.config import get_settings
from civiclake.errors import CivicLakeError
from civiclake.slices import Window
from civiclake.sources import bnt

MARCH = Window("date", date(2024, 3, 1), date(2024, 4, 1))


def _table() -> Table:
    catalog = tables.load_catalog(get_settings())
    return tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)


def _data_files(table: Table) -> set[str]:
    return {task.file.file_path for task in table.scan().plan_files()}


def _files_on_disk(home: Path) -> set[str]:
    return {p.name for p in home.rglob("*.parquet") if "/data/" in p.as_posix()}


def _write_in_other_process(out: Path, *, then: str) -> subprocess.CompletedProcess[str]:
    """A separate writer (as an engine's worker is): writes March's data files for the table,
    pickles their descriptors to ``out``, then exits cleanly or is SIGKILLed."""
    script = textwrap.dedent(
        f"""
        import os, pickle, signal
        from datetime import date
        from civiclake import tables
        from civiclake.config import get_settings
        from civiclake.sources import bnt
        from test_replace_range import rows_for

        catalog = tables.load_catalog(get_settings())
        table = catalog.load_table(bnt.TABLE)
        written = tables.write_files(table, [rows_for(date(2024, 3, 1), 31, run="writer")])
        open({str(out)!r}, "wb").write(pickle.dumps(written))
        if {then!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def test_files_written_elsewhere_commit_exactly_once(civiclake_home: Path, tmp_path: Path) -> None:
    table = _table()
    tables.replace_range(
        table, MARCH.iceberg_filter(), lambda: [rows_for(date(2024, 3, 1), 31, run="old")], {}
    )
    before = table.scan().to_arrow().num_rows
    out = tmp_path / "written.pickle"
    done = _write_in_other_process(out, then="exit")
    assert done.returncode == 0, done.stderr
    written = pickle.loads(out.read_bytes())
    assert written.rows == 31 * 24 * 2 and written.files

    table.refresh()
    assert table.scan().to_arrow().num_rows == before  # written, not committed: invisible
    result = tables.commit_files(table, MARCH.iceberg_filter(), written, {"run-id": "writer"})

    rows = table.scan().to_arrow()
    assert rows.num_rows == written.rows == result.rows_written == result.total_rows
    assert set(rows.column("load_run_id").to_pylist()) == {"writer"}
    assert _data_files(table) == {f.file_path for f in written.files}


def test_writer_killed_before_commit_leaves_the_table_unchanged(
    civiclake_home: Path, tmp_path: Path
) -> None:
    table = _table()
    first = tables.replace_range(
        table, MARCH.iceberg_filter(), lambda: [rows_for(date(2024, 3, 1), 31, run="old")], {}
    )
    on_disk = _files_on_disk(civiclake_home)
    out = tmp_path / "written.pickle"
    killed = _write_in_other_process(out, then="kill")
    assert killed.returncode == -9

    table.refresh()
    assert table.current_snapshot().snapshot_id == first.snapshot_id
    assert table.scan().to_arrow().num_rows == 31 * 24 * 2
    assert set(table.scan().to_arrow().column("load_run_id").to_pylist()) == {"old"}
    assert len(_files_on_disk(civiclake_home) - on_disk) > 0  # orphans, for maintain

    # the next run completes, each row once
    tables.replace_range(
        table, MARCH.iceberg_filter(), lambda: [rows_for(date(2024, 3, 1), 31, run="next")], {}
    )
    rows = table.scan().to_arrow()
    assert rows.num_rows == 31 * 24 * 2
    assert set(rows.column("load_run_id").to_pylist()) == {"next"}


def test_commit_after_another_writer_moved_the_table_on_keeps_both(civiclake_home: Path) -> None:
    table = _table()
    written = tables.write_files(table, [rows_for(date(2024, 3, 1), 31, run="march")])
    # another writer commits April meanwhile: our table object is stale, the files still fit
    other = tables.load_catalog(get_settings()).load_table(bnt.TABLE)
    tables.replace_range(
        other,
        Window("date", date(2024, 4, 1), date(2024, 5, 1)).iceberg_filter(),
        lambda: [rows_for(date(2024, 4, 1), 30, run="april")],
        {},
    )
    tables.commit_files(table, MARCH.iceberg_filter(), written, {"run-id": "march"})

    table.refresh()
    runs = Counter(table.scan().to_arrow().column("load_run_id").to_pylist())
    assert runs == {"march": 31 * 48, "april": 30 * 48}
    assert {f.file_path for f in written.files} <= _data_files(table)  # the same files


def test_partitioning_changed_meanwhile_rewrites_or_refuses(civiclake_home: Path) -> None:
    table = _table()
    data = rows_for(date(2024, 3, 1), 3, run="r")
    written = tables.write_files(table, [data])
    with table.update_spec() as update:  # another writer repartitions the table
        update.remove_field("date_month")
        update.add_field("date", DayTransform(), "date_day")
    with pytest.raises(CivicLakeError, match="partitioning changed during the load"):
        tables.commit_files(table, MARCH.iceberg_filter(), written, {})
    assert table.scan().to_arrow().num_rows == 0

    result = tables.commit_files(
        table,
        MARCH.iceberg_filter(),
        written,
        {},
        rewrite=lambda current: tables.write_files(current, [data]),
    )
    assert result.total_rows == data.num_rows == table.scan().to_arrow().num_rows
