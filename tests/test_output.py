"""Numbers and machine-readable output (issue 18): exact decimals, whole values in pipes, strict
JSON (big integers and decimals as exact strings, NaN null, nested structs, ISO intervals and
timestamps), a capped table view for ``sql``. CliRunner's stdout is not a terminal: a pipe."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


EXACT = (
    "SELECT 1234567890123.123456789::decimal(38,9) AS a, "
    "12345678901234567890.123456789::decimal(38,9) AS b"
)


def test_decimals_are_exact_in_every_format() -> None:
    table = cli("sql", EXACT)
    assert table.exit_code == 0, table.output
    assert "1234567890123.123456789" in table.stdout
    assert "12345678901234567890.123456789" in table.stdout
    rows = list(csv.reader(io.StringIO(cli("sql", EXACT, "-f", "csv").stdout)))
    assert rows[1] == ["1234567890123.123456789", "12345678901234567890.123456789"]
    assert strict_json(cli("sql", EXACT, "-f", "json").stdout) == [
        {"a": "1234567890123.123456789", "b": "12345678901234567890.123456789"}
    ]


def test_json_rule_for_every_kind_of_value() -> None:
    query = (
        "SELECT 'nan'::double AS nan, 'inf'::double AS inf, 1.5::double AS x, "
        "9007199254740993 AS big, 9007199254740992 AS edge, 12::bigint AS small, "
        "{'k': 1, 'l': [1, 2], 'd': 2.50::decimal(5,2)} AS s, [1.25::decimal(4,2)] AS l, "
        "INTERVAL 3 DAY + INTERVAL 4 HOUR AS i, INTERVAL 14 MONTH AS m, "
        "TIMESTAMPTZ '2024-01-01 10:00:00+02' AS tz, TIMESTAMP '2024-01-01 10:00:00' AS ts, "
        "DATE '2023-01-01' AS d, sum(1) AS total"
    )
    result = cli("sql", query, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = strict_json(result.stdout)
    assert row == {
        "nan": None,
        "inf": None,
        "x": 1.5,
        "big": "9007199254740993",
        "edge": 9007199254740992,
        "small": 12,
        "s": {"k": 1, "l": [1, 2], "d": "2.50"},
        "l": ["1.25"],
        "i": "P3DT4H",
        "m": "P1Y2M",
        "tz": "2024-01-01T08:00:00+00:00",
        "ts": "2024-01-01T10:00:00",
        "d": "2023-01-01",
        "total": 1,
    }
    text = cli("sql", query, "--format", "csv").stdout
    (as_csv,) = list(csv.DictReader(io.StringIO(text)))
    assert json.loads(as_csv["s"]) == {"k": 1, "l": [1, 2], "d": "2.50"}  # JSON, not a repr
    assert (as_csv["nan"], as_csv["big"], as_csv["i"]) == ("NaN", "9007199254740993", "P3DT4H")
    assert as_csv["tz"] == "2024-01-01T08:00:00+00:00"


def test_piped_sql_never_cuts_a_value() -> None:
    columns = ", ".join(f"DATE '2023-01-0{d}' AS day_number_{d}" for d in range(1, 10))
    result = cli("sql", f"SELECT 12345678901234 AS big, {columns}")
    assert result.exit_code == 0
    assert "…" not in result.stdout
    assert "12345678901234" in result.stdout
    assert all(f"2023-01-0{d}" in result.stdout for d in range(1, 10))
    assert all(f"day_number_{d}" in result.stdout for d in range(1, 10))


def test_sql_table_view_is_capped_and_says_how_to_get_everything() -> None:
    result = cli("sql", "SELECT range AS n FROM range(2500)")
    assert result.exit_code == 0
    assert "2,500 rows; the first 1,000 shown, 1,500 left out: use --format csv" in result.stdout
    assert " 999 " in result.stdout and " 1000 " not in result.stdout
    every = cli("sql", "SELECT range AS n FROM range(2500)", "--format", "csv")
    assert len(every.stdout.strip().splitlines()) == 2501


def _load(source: str) -> None:
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)
    row = {
        "plaza_id": 21,
        "facility": bnt.PLAZA_FACILITIES[21],
        "date": date(2024, 3, 1),
        "hour": 1,
        "direction": "I",
        "vehicles_e_zpass": 10,
        "vehicles_vtoll": 1,
        "load_run_id": "r1",
        "load_source": source,
        "loaded_at": datetime.now(UTC),
    }
    tables.replace_range(
        table,
        bnt.LoadRange(date(2024, 3, 1), date(2024, 3, 2)).table_filter(),
        lambda: [pa.Table.from_pylist([row], schema=bnt.ARROW_SCHEMA)],
        {"run-id": "r1", "source": source},
    )


def test_piped_tables_and_history_print_whole_values() -> None:
    source = "socrata:data.cityofnewyork.us/erm2-nwe9-with-a-rather-long-source-name-here"
    _load(source)
    listed = cli("tables")
    assert listed.exit_code == 0
    assert "…" not in listed.stdout
    assert "mta.bnt_traffic_hourly" in listed.stdout and source in listed.stdout
    assert datetime.now(UTC).strftime("%Y-%m-%d") in listed.stdout
    history = cli("history", bnt.TABLE)
    assert "…" not in history.stdout and source in history.stdout
    snapshot = tables.load_catalog(get_settings()).load_table(bnt.TABLE).current_snapshot()
    assert str(snapshot.snapshot_id) in history.stdout
    (entry,) = strict_json(cli("history", bnt.TABLE, "-f", "json").stdout)
    assert str(entry["snapshot_id"]) == str(snapshot.snapshot_id)  # exact, whatever its size
    if snapshot.snapshot_id > 2**53:
        assert entry["snapshot_id"] == str(snapshot.snapshot_id)


def test_piped_summaries_print_whole_values() -> None:
    from civiclake.cli import _print_taxi_summary, out

    summary = {
        "table": "tlc.green_trips",
        "to": "postgres",
        "months": [
            {
                "month": "2020-10",
                "status": "loaded",
                "rows_read": 1_234_567_890,
                "rows_loaded": 1_234_567_000,
                "rows_rejected": 890,
                "rejected_by_rule": {"dropoff_before_pickup": 800, "negative_distance": 90},
                "duration_s": 123.45,
            }
        ],
    }
    with out.capture() as captured:
        _print_taxi_summary(summary)
    text = captured.get()
    assert "…" not in text
    assert "dropoff_before_pickup 800, negative_distance 90" in text
    assert "1,234,567,890" in text and "1,234,567,000" in text


@pytest.mark.parametrize("option", [[], ["--format", "csv"], ["--format", "json"]])
def test_socrata_list_formats(civiclake_home: Any, option: list[str]) -> None:
    civiclake_home.mkdir(parents=True)
    (civiclake_home / "civiclake.toml").write_text(
        '[datasets.complaints_with_a_long_name]\nid = "erm2-nwe9"\n'
        'portal = "https://data.cityofnewyork.us"\n'
    )
    result = cli("socrata", "list", *option)
    assert result.exit_code == 0, result.output
    if option == ["--format", "json"]:
        (item,) = strict_json(result.stdout)
        assert item["name"] == "complaints_with_a_long_name"
        assert item["dataset"] == "https://data.cityofnewyork.us/erm2-nwe9"
        assert item["table"] == "socrata.erm2_nwe9" and item["rows"] is None
    elif option:
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert rows[0]["dataset"] == "https://data.cityofnewyork.us/erm2-nwe9"
    else:
        assert "…" not in result.stdout
        assert "https://data.cityofnewyork.us/erm2-nwe9" in result.stdout
        assert "complaints_with_a_long_name" in result.stdout


# -- help texts ---------------------------------------------------------------------------

COMMANDS = [
    ["sql"],
    ["tables"],
    ["report"],
    ["history"],
    ["rollback"],
    ["maintain"],
    ["doctor"],
    ["deploy"],
    ["bnt", "run"],
    ["taxi", "run"],
    ["socrata", "run"],
    ["socrata", "describe"],
    ["socrata", "list"],
]


def _help(command: list[str]) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_no_internal_placeholders(command: list[str]) -> None:
    text = _help(command)
    usage = text.strip().splitlines()[0]
    assert "{" not in usage and "[[" not in usage, usage
    for internal in ("<str>", "<int", "<list[", "<float", "<bool", "[[", "]]..."):
        assert internal not in text, f"{internal} in {' '.join(command)} --help"


def test_help_says_what_the_options_do() -> None:
    def help_text(command: list[str]) -> str:  # one line: the help wraps at the width
        return " ".join(_help(command).split())

    assert "postgres or bigquery (merged by :id, or the --date-field range)" in help_text(
        ["socrata", "run"]
    )
    bnt_help = help_text(["bnt", "run"])
    assert "--portal" in bnt_help and "CIVICLAKE_SOCRATA_URL" in bnt_help
    assert "gives --color, --year and --months" in help_text(["taxi", "run"])
    assert "required when stdin is not a terminal" in help_text(["rollback"])
    assert "--format [table|csv|json]" in help_text(["socrata", "list"])
    assert "sql [OPTIONS] QUERY" in help_text(["sql"])
    assert "[TABLE]..." in help_text(["report"])


def test_bnt_portal_must_be_a_url(civiclake_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("bnt", "run", "--portal", "not-a-url", "--start-date", "2024-03-01")
    assert result.exit_code == 2
    assert "'not-a-url' is not a URL" in result.output
    monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", "data.ny.gov")
    from_env = cli("bnt", "run", "--start-date", "2024-03-01")
    assert from_env.exit_code == 2
    assert "'data.ny.gov' is not a URL" in from_env.output
    assert not (civiclake_home / "lake").exists()


def test_piped_socrata_describe_prints_whole_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from civiclake.testing.socrata import SocrataServer
    from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows

    with SocrataServer() as srv:
        srv.add_dataset(DATASET, sample_rows(3), columns=COLUMNS, name="Every type")
        result = cli("socrata", "describe", DATASET, "--portal", srv.url)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert "decimal(38, 9)" in result.stdout and "timestamptz" in result.stdout
    assert f"({srv.url}/{DATASET})" in result.stdout


def test_sql_reads_quoted_table_names() -> None:
    _load("test")
    for name in (
        '"mta"."bnt_traffic_hourly"',
        'mta."bnt_traffic_hourly"',
        '"mta".bnt_traffic_hourly',
    ):
        result = cli("sql", f"SELECT count(*) AS n FROM {name}", "--format", "json")
        assert result.exit_code == 0, result.output
        assert strict_json(result.stdout) == [{"n": 1}]
