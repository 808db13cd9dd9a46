"""Fixtures of the table-operation tests: a Socrata replay server whose portal the simulated
daily loads (``testsupport.bnt_daily``) revise day by day."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from civiclake.testing.socrata import SocrataServer


@pytest.fixture(scope="session")
def socrata_replay() -> Iterator[SocrataServer]:
    with SocrataServer({}) as server:
        yield server


@pytest.fixture
def socrata(socrata_replay: SocrataServer, monkeypatch: pytest.MonkeyPatch) -> SocrataServer:
    monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", socrata_replay.url)
    socrata_replay.clear_faults()
    return socrata_replay
