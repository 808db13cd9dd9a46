"""The SODA client against the local replay server: paging, each fault, retries, errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date

import pytest
from pydantic import SecretStr

from civiclake.errors import ParameterError, SourceError
from civiclake.sources.socrata import SocrataClient, date_range_where
from civiclake.testing.socrata import Fault, SocrataServer, bnt_rows

DATASET = "qzve-kjga"


@pytest.fixture(scope="module")
def server() -> Iterator[SocrataServer]:
    with SocrataServer({DATASET: bnt_rows(date(2023, 4, 1), 5)}) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clean(server: SocrataServer) -> Iterator[None]:
    server.clear_faults()
    server.requests.clear()
    yield
    server.clear_faults()


def client_for(url: str, **kwargs: object) -> SocrataClient:
    options: dict[str, object] = {
        "timeout": 2.0,
        "max_attempts": 3,
        "backoff_initial": 0.01,
        "backoff_max": 0.02,
    }
    options.update(kwargs)
    return SocrataClient(url, **options)  # type: ignore[arg-type]


WHERE = date_range_where("date", date(2023, 4, 2), date(2023, 4, 4))


def test_where_uses_floating_timestamps() -> None:
    assert WHERE == ("date >= '2023-04-02T00:00:00.000' AND date < '2023-04-04T00:00:00.000'")


def test_pages_are_ordered_and_complete(server: SocrataServer) -> None:
    with client_for(server.url) as client:
        assert client.count(DATASET, where=WHERE) == 960
        pages = list(client.iter_pages(DATASET, order=":id", where=WHERE, page_size=100))
    rows = [r for p in pages for r in p.rows]
    assert len(rows) == 960
    assert len({(r["plaza_id"], r["date"], r["hour"], r["direction"]) for r in rows}) == 960
    assert [p.number for p in pages] == list(range(1, 11))
    data_requests = [r for r in server.requests if "$order" in r.params]
    assert all(r.params["$order"] == ":id" for r in data_requests)


def test_paging_requires_an_order(server: SocrataServer) -> None:
    with client_for(server.url) as client, pytest.raises(ValueError, match=r"\$order"):
        list(client.iter_pages(DATASET, order="", where=WHERE))


def test_429_honours_retry_after(server: SocrataServer) -> None:
    slept: list[float] = []
    server.inject(Fault.RATE_LIMIT, times=2, retry_after=1)
    with client_for(server.url, sleep=slept.append) as client:
        assert client.count(DATASET, where=WHERE) == 960
    assert slept == [1.0, 1.0]
    assert [r.status for r in server.requests] == [429, 429, 200]


@pytest.mark.parametrize("fault", [Fault.SERVER_ERROR, Fault.TRUNCATED])
def test_transient_faults_are_retried(server: SocrataServer, fault: Fault) -> None:
    slept: list[float] = []
    server.inject(fault, times=2, only="data")
    with client_for(server.url, sleep=slept.append) as client:
        pages = list(client.iter_pages(DATASET, order=":id", where=WHERE, page_size=1000))
    assert sum(len(p.rows) for p in pages) == 960
    assert len(slept) == 2 and all(0 < s <= 0.02 for s in slept)
    assert client.retries == 2


def test_slow_answer_times_out_then_retries(server: SocrataServer) -> None:
    server.inject(Fault.SLOW, times=1, delay=3.0)
    with client_for(server.url, timeout=0.3) as client:
        assert client.count(DATASET, where=WHERE) == 960
        assert client.retries == 1


def test_backoff_grows_exponentially_with_jitter() -> None:
    client = SocrataClient("http://127.0.0.1:9", backoff_initial=1.0, backoff_max=5.0)
    delays = [client._backoff(attempt, None) for attempt in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(2.5 <= d <= 5.0 for d in delays[3:])


def test_retries_run_out_with_one_line_reason(server: SocrataServer) -> None:
    server.inject(Fault.SERVER_ERROR, times=3)
    with client_for(server.url) as client, pytest.raises(SourceError) as info:
        client.count(DATASET, where=WHERE)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("failed after 3 attempts: HTTP 500")


def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with client_for(f"http://127.0.0.1:{port}") as client, pytest.raises(SourceError) as info:
        client.count(DATASET)
    assert "connection failed" in str(info.value) and client.retries == 2


def test_unknown_dataset_is_a_clear_error(server: SocrataServer) -> None:
    with client_for(server.url) as client, pytest.raises(SourceError) as info:
        client.count("abcd-1234")
    assert str(info.value) == f"Socrata dataset 'abcd-1234' not found at {server.url} (HTTP 404)"
    assert len(server.requests) == 1  # a 404 is not retried


def test_bad_query_is_not_retried(server: SocrataServer) -> None:
    # the portal refused the query: bad input (exit 2), one line
    with client_for(server.url) as client, pytest.raises(ParameterError, match="HTTP 400"):
        client.count(DATASET, where="nonsense ((")
    assert len(server.requests) == 1


def test_app_token_is_sent_and_never_in_errors(server: SocrataServer) -> None:
    token = SecretStr("tok-123-secret")
    server.inject(Fault.SERVER_ERROR, times=3)
    with client_for(server.url, app_token=token) as client, pytest.raises(SourceError) as info:
        client.count(DATASET)
    assert server.requests[0].headers["x-app-token"] == "tok-123-secret"
    assert "tok-123-secret" not in str(info.value)
