"""`civiclake report` end to end: pages on disk, opened in Debian's Chromium with every network
request blocked and counted (zero expected), no console errors, every chart drawn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_support import (
    EMPTY_TABLE,
    NO_TIME_TABLE,
    PERMITS_TABLE,
    SCREENSHOTS,
    SOCRATA_TABLE,
    Lake,
)
from typer.testing import CliRunner

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.report import list_identifiers
from testsupport.browser import CHROMIUM, chromium_page, guard

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def written(lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`civiclake report --out DIR` of every table, once."""
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIVICLAKE_HOME", str(lake.home))
        code, output = cli("report", "--out", str(out))
        assert code == 0, output
        identifiers = list_identifiers(tables.load_catalog(get_settings()))
    printed = output.split()
    assert printed == [str(out / f"{i}.html") for i in identifiers] + [str(out / "index.html")]
    return out


def test_report_writes_a_page_per_table_and_an_index(written: Path, at_lake: Lake) -> None:
    index = (written / "index.html").read_text()
    for identifier in list_identifiers(tables.load_catalog(get_settings())):
        page = (written / f"{identifier}.html").read_text()
        assert f"<h1>{identifier}</h1>" in page
        assert f'href="{identifier}.html"' in index
        # self-contained: no script, no stylesheet or font link, no URL but SVG's namespaces
        assert "<script" not in page and "<link" not in page
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>)]*", page))
        assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
        # every figure in a table cell: digits grouped by thousands, never 6720 beside 6,720
        cells = re.findall(r'<td class="num">([^<]*)</td>', page)
        assert [c for c in cells if not re.fullmatch(r"-?\d{1,3}(,\d{3})*(\.\d+)?", c)] == []
    assert "no date or timestamp column" in (written / f"{NO_TIME_TABLE}.html").read_text()
    # a table never loaded (a first load killed before its commit) is left out, unless named
    assert not (written / f"{EMPTY_TABLE}.html").exists() and EMPTY_TABLE not in index


def test_a_table_never_loaded_gets_its_page_when_named(at_lake: Lake, tmp_path: Path) -> None:
    code, output = cli("report", EMPTY_TABLE, "--out", str(tmp_path))
    assert code == 0, output
    assert "the table is empty" in (tmp_path / f"{EMPTY_TABLE}.html").read_text()


def test_report_of_named_tables_since_a_date(at_lake: Lake, tmp_path: Path) -> None:
    code, output = cli(
        "report", "mta.bnt_traffic_hourly", "--out", str(tmp_path), "--since", "2024-03-08"
    )
    assert code == 0, output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["index.html", "mta.bnt_traffic_hourly.html"]
    page = (tmp_path / "mta.bnt_traffic_hourly.html").read_text()
    assert "3,360 rows, rows since 2024-03-08" in page  # 7 of the 14 days


def test_report_by_a_chosen_date_column(at_lake: Lake, tmp_path: Path) -> None:
    code, output = cli(
        "report", PERMITS_TABLE, "--date-column", "filed_date", "--out", str(tmp_path)
    )
    assert code == 0, output
    page = (tmp_path / f"{PERMITS_TABLE}.html").read_text()
    assert "<h3>Rows per month (filed_date)</h3>" in page
    code, output = cli("report", PERMITS_TABLE, "--out", str(tmp_path))
    assert code == 0, output
    page = (tmp_path / f"{PERMITS_TABLE}.html").read_text()
    assert "<h3>Rows per month (issued_date)</h3>" in page  # the partition column


def test_default_folder_is_under_the_home(at_lake: Lake) -> None:
    code, output = cli("report", SOCRATA_TABLE)
    assert code == 0, output
    assert output.split()[-1] == str(at_lake.home / "reports" / "index.html")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "no.such_table"], "error: no table 'no.such_table' in the catalog"),
        (["report", "--since", "last week"], "error: --since: 'last week' is not a date"),
        (
            ["report", PERMITS_TABLE, "--date-column", "fee"],
            f"error: --date-column 'fee': {PERMITS_TABLE} has no such date or timestamp column "
            "(its date columns: socrata_created_at, socrata_updated_at, filed_date, issued_date)",
        ),
        (  # every table: most have no filed_date, and nothing is written
            ["report", "--date-column", "filed_date"],
            "error: --date-column 'filed_date': ",
        ),
        (
            ["report", "mta.bnt_traffic_hourly", "--date-column", "loaded_at"],
            "error: --date-column 'loaded_at': the page of mta.bnt_traffic_hourly is drawn by "
            "its 'date' column",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(at_lake: Lake, args: list[str], message: str) -> None:
    code, output = cli(*args)
    assert code == 2
    assert output.strip().startswith(message), output


# labels a page must show, as Chromium renders it
CHART_LABELS = {
    "tlc.green_trips": ("tip_share_distribution", ["0%", "10%", "50%", "tip, % of the fare"]),
    "edge.revised": ("rows_per_snapshot", ["added (rolled back)", "20,000", "committed (UTC)"]),
    "mta.bnt_traffic_hourly": ("ezpass_share", ["0%", "100%"]),
}


def test_pages_open_offline_in_chromium(written: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    SCREENSHOTS.mkdir(exist_ok=True)
    pages = sorted(written.glob("*.html"))
    with chromium_page(tmp_path / "profile") as page:
        for path in pages:
            url = path.as_uri()
            seen = guard(page, allow=(url,))
            page.goto(url)
            page.wait_for_load_state("load")
            assert seen.blocked == [], f"{path.name} asked for {seen.blocked}"
            assert seen.allowed == [url]  # the page itself, nothing else
            assert seen.console_errors == [], seen.console_errors
            html = path.read_text()
            drawn = html.count('<div class="chart"><svg')
            assert page.locator("div.chart > svg").count() == drawn
            # B&T: 4 charts + 2 data quality (no year-over-year on 2 weeks); TLC: 7 + 2
            assert drawn >= {"mta.bnt_traffic_hourly": 6, "tlc.green_trips": 9}.get(
                path.stem, 0 if path.stem in ("index", EMPTY_TABLE) else 1
            )
            # every drawn chart has marks on it (bars, lines or cells), not just axes
            for chart in page.locator("div.chart > svg").all():
                assert chart.locator("path, rect").count() > 2
                assert chart.bounding_box()["height"] > 40
            # what a reader sees: no 9e+05 anywhere, the charts' own labels included
            shown = page.evaluate(
                "() => [document.body.innerText, ...Array.from("
                "document.querySelectorAll('svg text'), t => t.textContent)].join('\\n')"
            )
            # (run ids are UUIDs: "9a3e-6906" is not a number in scientific notation)
            shown = re.sub(r"\b[0-9a-f]{8}(?:-[0-9a-f]*)+", "<run id>", shown)  # whole or cut
            assert not re.findall(r"\d(?:\.\d+)?e[+-]\d", shown), path.name
            if path.stem in CHART_LABELS:
                key, wanted = CHART_LABELS[path.stem]
                labels = page.locator(f"#{key} svg text").all_text_contents()
                assert set(wanted) <= set(labels), (path.name, labels)
            page.screenshot(path=str(SCREENSHOTS / f"report-{path.stem}.png"), full_page=True)
            page.unroute("**/*")


def test_report_never_imports_prefect(at_lake: Lake, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from civiclake.cli import app\n"
        "r = CliRunner().invoke(app, ['report', 'edge.one_row', '--out', sys.argv[1]])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "edge.one_row.html").is_file()
