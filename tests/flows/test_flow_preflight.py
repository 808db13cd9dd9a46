"""A flow run without the CLI (a deployment's) runs the same pre-flight checks at its start:
bad input is refused with the CLI's message before anything is fetched or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from civiclake.config import get_settings
from civiclake.errors import ParameterError

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]


def _nothing_written() -> None:
    assert not (get_settings().home_dir / "lake" / "raw").exists()


def test_bnt_flow_refuses_a_file_kind_it_does_not_read(tmp_path: Path) -> None:
    from civiclake.flows.bnt import bnt_hourly_traffic

    export = tmp_path / "export.xlsx"
    export.write_bytes(b"PK")
    with pytest.raises(ParameterError, match="unsupported file type"):
        bnt_hourly_traffic(from_file=str(export))
    _nothing_written()


def test_bnt_flow_refuses_an_incremental_run_without_a_table() -> None:
    from civiclake.flows.bnt import bnt_hourly_traffic

    with pytest.raises(ParameterError, match="is empty: give --start-date for the first load"):
        bnt_hourly_traffic()
    _nothing_written()


def test_socrata_flow_refuses_a_partition_it_cannot_make() -> None:
    from civiclake.flows.socrata import socrata_dataset

    with pytest.raises(ParameterError, match=r"--partition .week\(x\).: use month\(COLUMN\)"):
        socrata_dataset(dataset="abcd-1234", partition="week(x)")
    _nothing_written()


def test_tlc_flow_refuses_an_unknown_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from civiclake.flows.tlc import tlc_taxi_trips

    monkeypatch.setenv("CIVICLAKE_ENGINE", "ray")
    with pytest.raises(ParameterError, match="unknown engine 'ray'"):
        tlc_taxi_trips(color="green", year=2020, months=[10])
    _nothing_written()
