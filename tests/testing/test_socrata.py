"""Tests for the local Socrata server that the rest of the suite and the benchmarks rely on."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from civiclake.testing.socrata import Fault, SocrataServer, bnt_rows

DATASET = "qzve-kjga"
RESOURCE = f"/resource/{DATASET}.json"
START = datetime.date(2023, 4, 8)
DAYS = 3
ROWS = bnt_rows(START, DAYS)  # 1,440 rows: 2023-04-08 .. 2023-04-10
KEY_FIELDS = ("date", "hour", "plaza_id", "direction")


def key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[f] for f in KEY_FIELDS)


@pytest.fixture
def server() -> Iterator[SocrataServer]:
    with SocrataServer({DATASET: ROWS}, seed=7) as running:
        yield running


@pytest.fixture
def client(server: SocrataServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        yield http


def count(client: httpx.Client, where: str | None = None) -> httpx.Response:
    params = {"$select": "count(*)"}
    if where is not None:
        params["$where"] = where
    return client.get(RESOURCE, params=params)


# -- synthetic rows ------------------------------------------------------------------------


def test_bnt_rows_shape_order_and_determinism() -> None:
    assert len(ROWS) == 480 * DAYS
    assert set(ROWS[0]) == {
        "plaza_id",
        "date",
        "hour",
        "direction",
        "vehicles_e_zpass",
        "vehicles_vtoll",
    }
    assert all(isinstance(v, str) for row in ROWS for v in row.values())
    assert ROWS[0] == {**ROWS[0], "plaza_id": "21", "date": "2023-04-08T00:00:00.000", "hour": "0"}
    assert [r["direction"] for r in ROWS[:2]] == ["I", "O"]
    assert ROWS[-1]["date"] == "2023-04-10T00:00:00.000"
    assert ROWS[-1]["hour"] == "23" and ROWS[-1]["plaza_id"] == "30"
    ordered = sorted(ROWS, key=lambda r: (r["date"], int(r["hour"]), int(r["plaza_id"])))
    assert [key(r) for r in ordered] == [key(r) for r in ROWS]
    assert len({key(r) for r in ROWS}) == len(ROWS)
    assert all(0 <= int(r["vehicles_e_zpass"]) <= 5000 for r in ROWS)
    assert len({r["vehicles_e_zpass"] for r in ROWS}) > 100  # not constant
    # Deterministic, and a key's counts do not depend on the requested range.
    assert bnt_rows(START, DAYS) == ROWS
    assert bnt_rows(START + datetime.timedelta(days=1), 1) == ROWS[480:960]
    assert len(bnt_rows(START, 1, plazas=(1, 2))) == 2 * 2 * 24


# -- lifecycle -----------------------------------------------------------------------------


def test_start_and_stop() -> None:
    server = SocrataServer({DATASET: ROWS[:10]})
    with pytest.raises(RuntimeError):
        _ = server.url
    assert server.start() is server
    try:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith("/")
        response = httpx.get(server.url + RESOURCE, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json;charset=utf-8"
        assert len(response.json()) == 10
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + RESOURCE, timeout=2)
    server.stop()  # idempotent


def test_keep_alive_connection_is_reused(client: httpx.Client, server: SocrataServer) -> None:
    for _ in range(3):
        assert client.get(RESOURCE, params={"$limit": 1}).status_code == 200
    assert len(server.requests) == 3  # all answered over one pooled connection without error


# -- paging --------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [":id", "date, hour, plaza_id, direction", "date DESC, :id"])
def test_ordered_paging_returns_every_row_once(client: httpx.Client, order: str) -> None:
    seen: list[dict[str, str]] = []
    offset = 0
    while True:
        page = client.get(RESOURCE, params={"$order": order, "$limit": 100, "$offset": offset})
        assert page.status_code == 200
        rows = page.json()
        seen += rows
        if len(rows) < 100:
            break
        offset += 100
    assert len(seen) == len(ROWS)
    assert sorted(map(key, seen)) == sorted(map(key, ROWS))
    assert all(":id" not in row for row in seen)


def test_order_sorts_by_string_values(client: httpx.Client) -> None:
    rows = client.get(RESOURCE, params={"$order": "hour DESC, plaza_id", "$limit": 5000}).json()
    hours = [r["hour"] for r in rows]
    assert hours == sorted(hours, reverse=True)  # string order: "9" > "23" > "10"
    assert hours[0] == "9"
    first_hour = [r["plaza_id"] for r in rows if r["hour"] == "9"]
    assert first_hour == sorted(first_hour)


def test_order_by_hidden_id_follows_input_or_explicit_ids() -> None:
    rows = [{"a": "x", ":id": "row-b"}, {"a": "y", ":id": "row-a"}, {"a": "z"}]
    with SocrataServer({"ds": rows}) as server:
        got = httpx.get(f"{server.url}/resource/ds.json", params={"$order": ":id"}).json()
    # "row-2" is the generated id of the third row; ':id' is never served.
    assert got == [{"a": "z"}, {"a": "y"}, {"a": "x"}]


def test_without_order_each_request_is_shuffled(client: httpx.Client) -> None:
    first = client.get(RESOURCE, params={"$limit": 5000}).json()
    second = client.get(RESOURCE, params={"$limit": 5000}).json()
    assert sorted(map(key, first)) == sorted(map(key, second)) == sorted(map(key, ROWS))
    assert [key(r) for r in first] != [key(r) for r in second]


def test_unordered_paging_can_duplicate_and_miss_rows(client: httpx.Client) -> None:
    seen = []
    for offset in range(0, len(ROWS), 200):
        seen += client.get(RESOURCE, params={"$limit": 200, "$offset": offset}).json()
    assert len(seen) == len(ROWS)
    assert len({key(r) for r in seen}) < len(ROWS)


def test_default_limit_and_offset(client: httpx.Client) -> None:
    assert len(client.get(RESOURCE).json()) == 1000
    tail = client.get(RESOURCE, params={"$order": ":id", "$offset": 1400}).json()
    assert len(tail) == 40
    assert client.get(RESOURCE, params={"$offset": 5000}).json() == []


# -- $where and count ----------------------------------------------------------------------


def test_where_date_range_and_count(client: httpx.Client) -> None:
    where = "date >= '2023-04-09T00:00:00.000' AND date < '2023-04-10T00:00:00.000'"
    rows = client.get(RESOURCE, params={"$where": where, "$limit": 5000}).json()
    assert len(rows) == 480
    assert {r["date"] for r in rows} == {"2023-04-09T00:00:00.000"}
    assert count(client, where).json() == [{"count": "480"}]
    assert count(client).json() == [{"count": str(len(ROWS))}]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("(date > '2023-04-09T00:00:00.000') and (plaza_id = '21')", 48),
        ("((date > '2023-04-09T00:00:00.000' AND direction != 'I'))", 240),
        ("plaza_id = 21 AND hour >= 12", 3 * 2 * 12),  # numeric literals compare as numbers
        ("hour <= '12' AND plaza_id = '22' AND direction = 'O'", 3 * 5),  # strings: 0,1,10,11,12
        ("plaza_id = 'nope'", 0),
    ],
)
def test_where_variants(client: httpx.Client, where: str, expected: int) -> None:
    assert count(client, where).json() == [{"count": str(expected)}]
    assert len(client.get(RESOURCE, params={"$where": where, "$limit": 5000}).json()) == expected


def test_count_alias_is_case_insensitive(client: httpx.Client) -> None:
    got = client.get(RESOURCE, params={"$select": "COUNT(*) AS n", "$where": "hour = '3'"})
    assert got.json() == [{"n": str(3 * 20)}]


@pytest.mark.parametrize(
    "params",
    [
        {"$where": "date >= "},
        {"$where": "date >= '2023' OR hour = '1'"},
        {"$where": "(date >= '2023'"},
        {"$where": "date >= 2023-04-01"},
        {"$order": "date sideways"},
        {"$select": "plaza_id, date"},
        {"$limit": "ten"},
        {"$where": "no_such_column = '1'"},
    ],
)
def test_bad_queries_answer_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(RESOURCE, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] is True and body["code"].startswith("query.")


def test_unknown_dataset_and_path_are_404(client: httpx.Client) -> None:
    response = client.get("/resource/abcd-1234.json")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "error": True, "message": "Dataset not found"}
    assert client.get("/api/views/abcd-1234.json").status_code == 404


def test_add_dataset_replaces_rows_and_invalidates_cache(
    client: httpx.Client, server: SocrataServer
) -> None:
    assert count(client).json() == [{"count": "1440"}]
    server.add_dataset(DATASET, ROWS[:5])
    assert count(client).json() == [{"count": "5"}]
    assert len(client.get(RESOURCE, params={"$order": ":id"}).json()) == 5


# -- faults --------------------------------------------------------------------------------


def test_rate_limit(client: httpx.Client, server: SocrataServer) -> None:
    server.inject(Fault.RATE_LIMIT, times=2, retry_after=1.5)
    for _ in range(2):
        response = client.get(RESOURCE)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"] is True
    assert client.get(RESOURCE).status_code == 200
    server.inject(Fault.RATE_LIMIT)
    response = client.get(RESOURCE)
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert [r.status for r in server.requests] == [429, 429, 200, 429]
    assert server.requests[0].fault is Fault.RATE_LIMIT


def test_server_error(client: httpx.Client, server: SocrataServer) -> None:
    server.inject(Fault.SERVER_ERROR)
    response = client.get(RESOURCE)
    assert response.status_code == 500 and response.json()["error"] is True
    assert client.get(RESOURCE).status_code == 200


def test_truncated_body_is_complete_but_invalid(
    client: httpx.Client, server: SocrataServer
) -> None:
    params = {"$order": ":id", "$limit": 50}
    full = client.get(RESOURCE, params=params).content
    server.inject(Fault.TRUNCATED)
    response = client.get(RESOURCE, params=params)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content == full[: len(full) // 2]
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert client.get(RESOURCE, params=params).content == full  # keep-alive still fine


def test_slow_answer_exceeds_client_timeout(client: httpx.Client, server: SocrataServer) -> None:
    server.inject(Fault.SLOW, delay=2)
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.get(RESOURCE, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert client.get(RESOURCE, params={"$limit": 1}).status_code == 200  # others not held up
    assert server.requests[0].fault is Fault.SLOW


def test_not_found_fault(client: httpx.Client, server: SocrataServer) -> None:
    server.inject(Fault.NOT_FOUND)
    response = client.get(RESOURCE)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert client.get(RESOURCE).status_code == 200


def test_fault_only_count_skips_data_requests(client: httpx.Client, server: SocrataServer) -> None:
    server.inject(Fault.SERVER_ERROR, only="count")
    assert client.get(RESOURCE).status_code == 200
    assert count(client).status_code == 500
    assert count(client).status_code == 200
    server.inject(Fault.SERVER_ERROR, only="data")
    assert count(client).status_code == 200
    assert client.get(RESOURCE).status_code == 500


def test_clear_faults(client: httpx.Client, server: SocrataServer) -> None:
    server.inject(Fault.SERVER_ERROR, times=5)
    server.set_count_offset(3)
    server.clear_faults()
    assert client.get(RESOURCE).status_code == 200
    assert count(client).json() == [{"count": "1440"}]


def test_inject_validates_arguments(server: SocrataServer) -> None:
    with pytest.raises(ValueError):
        server.inject(Fault.SLOW, only="both")
    with pytest.raises(ValueError):
        server.inject(Fault.SLOW, times=0)


def test_count_offset(client: httpx.Client, server: SocrataServer) -> None:
    server.set_count_offset(7)
    assert count(client).json() == [{"count": "1447"}]
    assert count(client, "hour = '0'").json() == [{"count": str(60 + 7)}]
    server.set_count_offset(-1)
    assert count(client).json() == [{"count": "1439"}]
    server.set_count_offset(0)
    assert count(client).json() == [{"count": "1440"}]


def test_drop_rows_once(client: httpx.Client, server: SocrataServer) -> None:
    params = {"$order": ":id", "$limit": 100}
    full = client.get(RESOURCE, params=params).json()
    server.drop_rows_once(3)
    assert count(client).json() == [{"count": "1440"}]  # counts are not affected
    assert client.get(RESOURCE, params=params).json() == full[:97]
    assert client.get(RESOURCE, params=params).json() == full


# -- request log ---------------------------------------------------------------------------


def test_request_log_records_path_params_and_headers(
    client: httpx.Client, server: SocrataServer
) -> None:
    where = "date >= '2023-04-09T00:00:00.000'"
    client.get(RESOURCE, params={"$where": where, "$limit": 2}, headers={"X-App-Token": "tok"})
    client.get("/resource/missing.json")
    first, second = server.requests
    assert first.path == RESOURCE
    assert first.params == {"$where": where, "$limit": "2"}
    assert first.headers["x-app-token"] == "tok"
    assert all(k == k.lower() for k in first.headers)
    assert first.status == 200 and first.fault is None
    assert (second.path, second.status) == ("/resource/missing.json", 404)


# -- command line --------------------------------------------------------------------------


def test_cli_serves_exactly_n_rows() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    process = subprocess.Popen(
        [sys.executable, "-m", "civiclake.testing.socrata", "--rows", "1000", "--dataset", "ab"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        got = httpx.get(f"{url}/resource/ab.json", params={"$select": "count(*)"}, timeout=5)
        assert got.json() == [{"count": "1000"}]
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


def test_rows_updated_at_changes_with_every_change_of_the_rows() -> None:
    """Two revisions within one second (new metadata included) must still say "changed", or a
    client reuses the pages of the older rows."""
    columns = [("name", "text")]
    with SocrataServer() as server:
        stamps = []
        for revision in range(3):
            server.add_dataset("abcd-1234", [{"name": f"r{revision}"}], columns=columns)
            view = httpx.get(f"{server.url}/api/views/abcd-1234.json").json()
            stamps.append(view["rowsUpdatedAt"])
    assert stamps[0] < stamps[1] < stamps[2]
