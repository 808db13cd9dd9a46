"""The error rule (issue 18): every failure is one ``error:`` line on stderr, exit 2 for bad
input and 1 for a failure of the world, a traceback only with ``--debug``/``CIVICLAKE_DEBUG``.

Real components throughout: the civiclake process, real config files, real HTTP servers (the
Socrata replay server, and a tiny one answering what a broken portal answers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from civiclake.cli import app
from civiclake.testing.socrata import Fault, SocrataServer
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def civiclake(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "civiclake.cli", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


# -- the central rule: unexpected errors, --debug ---------------------------------------


def test_an_unexpected_failure_is_one_line_and_debug_shows_the_traceback(
    civiclake_home: Path,
) -> None:
    civiclake_home.mkdir(parents=True)
    (civiclake_home / "catalog.db").write_text("not a sqlite database " * 10)
    done = civiclake("tables")
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "file is not a database" in line and "--debug" in line
    debug = civiclake("--debug", "tables")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: ")
    from_env = civiclake("tables", CIVICLAKE_DEBUG="1")
    assert "Traceback (most recent call last)" in from_env.stderr


# -- settings and the config file: bad input, exit 2 ---------------------------------------


def test_civiclake_home_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "a-file"
    home.write_text("x")
    monkeypatch.setenv("CIVICLAKE_HOME", str(home))
    result = cli("tables")
    assert result.exit_code == 2
    assert "CIVICLAKE_HOME" in one_error_line(result.output) and "not a directory" in result.output


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "abc")
    result = cli("tables")
    assert result.exit_code == 2
    assert "CIVICLAKE_PAGE_SIZE" in one_error_line(result.output) and "'abc'" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lake_url = \n", "is not valid TOML"),
        ('[datasets.y]\nportal = "https://data.ny.gov"\n', '[datasets.y] needs id = "..."'),
        ('lake_ur = "file:///tmp/x"\n', "unknown key 'lake_ur'"),
        ('[datasets.y]\nid = "abcd-1234"\nwhre = "x > 1"\n', "unknown key 'whre'"),
    ],
)
def test_a_bad_config_file_is_one_line(civiclake_home: Path, text: str, message: str) -> None:
    civiclake_home.mkdir(parents=True)
    (civiclake_home / "civiclake.toml").write_text(text)
    result = cli("socrata", "list")
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result.output)


def test_report_out_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    for out in (target, target / "sub"):
        result = cli("report", "--out", str(out))
        assert result.exit_code == 2
        assert "not a directory" in one_error_line(result.output)


# -- sql -----------------------------------------------------------------------------------


def test_sql_bad_input_exits_2_and_names_what_is_wrong() -> None:
    empty = cli("sql", "  ")
    assert empty.exit_code == 2 and "the query is empty" in one_error_line(empty.output)
    syntax = cli("sql", "SELEC 1")
    assert syntax.exit_code == 2 and "Parser Error" in one_error_line(syntax.output)
    unknown = cli("sql", "SELECT * FROM mta.bnt_traffic_hourly")
    assert unknown.exit_code == 2
    assert "no table mta.bnt_traffic_hourly" in one_error_line(unknown.output)
    assert "schema" not in unknown.output


# -- missing files: exit 2 before anything runs -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["bnt", "run", "--from-file", "/nowhere/bnt.csv"],
        ["taxi", "run", "--from-file", "/nowhere/green_tripdata_2020-10.csv.gz"],
    ],
)
def test_a_missing_from_file_is_refused_before_anything_runs(
    args: list[str], civiclake_home: Path
) -> None:
    done = civiclake(*args)
    assert done.returncode == 2
    assert "no such file" in one_error_line(done.stderr)
    assert not (civiclake_home / "lake").exists()


def test_a_file_name_and_an_option_that_disagree(tmp_path: Path, civiclake_home: Path) -> None:
    path = tmp_path / "green_tripdata_2020-10.csv.gz"
    path.write_bytes(b"")
    result = cli("taxi", "run", "--from-file", str(path), "--months", "11")
    assert result.exit_code == 2
    assert "--months 11 contradicts the file name" in one_error_line(result.output)
    assert not (civiclake_home / "lake").exists()


def test_an_unreachable_prefect_server_is_one_line(tmp_path: Path, civiclake_home: Path) -> None:
    path = tmp_path / "green_tripdata_2020-10.csv.gz"
    path.write_bytes(b"")
    done = civiclake(
        "taxi", "run", "--from-file", str(path), PREFECT_API_URL="http://127.0.0.1:9/api"
    )
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "cannot reach the Prefect server at PREFECT_API_URL=http://127.0.0.1:9/api" in line


# -- portals: bad input is not retried as a network failure ----------------------------------


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocrataServer]:
    srv = SocrataServer()
    srv.add_dataset(DATASET, sample_rows(5), columns=COLUMNS, name="Every type")
    with srv:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", srv.url)
        yield srv


def test_a_portal_that_is_not_a_url_is_refused_at_once() -> None:
    started = time.monotonic()
    result = cli("socrata", "describe", DATASET, "--portal", "not-a-url")
    assert result.exit_code == 2
    assert "'not-a-url' is not a URL" in one_error_line(result.output)
    assert time.monotonic() - started < 30  # not retried (the retry waits are tiny anyway)


def test_https_against_an_http_portal_says_so(portal: SocrataServer) -> None:
    https = portal.url.replace("http://", "https://")
    result = cli("socrata", "describe", DATASET, "--portal", https)
    assert result.exit_code == 2, result.output
    assert f"use {portal.url}" in one_error_line(result.output)
    assert len(portal.requests) == 0  # no request got through


def test_a_portal_that_keeps_failing_is_one_line(portal: SocrataServer) -> None:
    portal.inject(Fault.SERVER_ERROR, times=20)
    result = cli("socrata", "describe", DATASET)
    assert result.exit_code == 1
    assert "HTTP 500" in one_error_line(result.output)


def test_a_dataset_url_with_another_portal_or_its_own_where_is_refused(
    portal: SocrataServer,
) -> None:
    url = f"{portal.url}/resource/{DATASET}.json"
    other = cli("socrata", "run", url, "--portal", "https://data.cityofnewyork.us")
    assert other.exit_code == 2
    assert "differs from the dataset URL's portal" in one_error_line(other.output)
    where = cli("socrata", "run", url + "?$where=borough='BRONX'")
    assert where.exit_code == 2
    assert "pass it as --where" in one_error_line(where.output)
    assert portal.requests == []
    page = cli("socrata", "describe", url + "?tab=about")  # not SoQL: harmless
    assert page.exit_code == 0, page.output


class _Fixed(BaseHTTPRequestHandler):
    """Answers every GET with the class's status, content type and body."""

    body = b""
    content_type = "application/json"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[type[_Fixed]]:
    """A server answering 200 with whatever the test sets on the yielded handler class."""
    handler = type("Handler", (_Fixed,), {})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    httpd.shutdown()
    httpd.server_close()


def test_an_html_page_is_called_an_html_page(answering: type[_Fixed]) -> None:
    answering.content_type = "text/html"
    answering.body = b"<!DOCTYPE html><html><body>Down for maintenance</body></html>"
    url = answering.url  # type: ignore[attr-defined]
    result = cli("socrata", "describe", DATASET, "--portal", url)
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "answered an HTML page, not JSON" in line and "truncated" not in line


def test_a_json_object_instead_of_a_list(answering: type[_Fixed]) -> None:
    from civiclake.errors import SourceError
    from civiclake.sources.socrata import SocrataClient

    answering.body = b'{"error": true, "message": "query timeout"}'
    url = answering.url  # type: ignore[attr-defined]
    with SocrataClient(url, max_attempts=1) as client, pytest.raises(SourceError, match="count"):
        client.count(DATASET)


def test_a_portal_that_is_down_is_one_line() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("socrata", "describe", DATASET, "--portal", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "failed after 4 attempts: connection failed" in line


def test_a_portal_answering_an_error_object_says_so(answering: type[_Fixed]) -> None:
    answering.body = b'{"error": true, "message": "query timeout"}'
    url = answering.url  # type: ignore[attr-defined]
    result = cli("socrata", "describe", DATASET, "--portal", url)
    assert result.exit_code == 1
    assert "answered something that is not a view: query timeout" in one_error_line(result.output)
