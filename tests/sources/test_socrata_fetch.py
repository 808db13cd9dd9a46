"""The Socrata fetch's own checks: a page's rows counted without decoding it, a cut page
refused (the client retries it), and a complete fetch found again only while it is valid."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson
import pytest

from civiclake.config import get_settings
from civiclake.sources import socrata_dataset as datasets, socrata_fetch as fetching
from civiclake.sources.socrata import BodyError
from civiclake.testing.socrata import tabular_view
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows


def spec(rows_updated_at: int | None = 1_700_000_000) -> datasets.DatasetSpec:
    view = {**tabular_view(DATASET, COLUMNS, "Sample", 10), "rowsUpdatedAt": rows_updated_at}
    return datasets.spec_from_view(view, portal="https://data.example.org")


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(sample_rows(7)),
        json.dumps(sample_rows(7)).encode(),  # ": " separators
        json.dumps(sample_rows(7), indent=2).encode(),  # pretty, "}\n]" at the end
    ],
)
def test_rows_are_counted_by_their_id_keys(body: bytes) -> None:
    assert len(fetching._counted(body)) == 7


def test_an_id_key_inside_a_value_is_not_a_row() -> None:
    rows = sample_rows(2)
    rows[0]["blob"] = '{":id": "not a row"}'
    assert len(fetching._counted(orjson.dumps(rows))) == 2
    assert len(fetching._counted(b"[]")) == len(fetching._counted(b" [ ]\n")) == 0


@pytest.mark.parametrize("cut", [0.5, 0.99, 0.0])
def test_a_cut_page_is_a_body_error(cut: float) -> None:
    body = orjson.dumps(sample_rows(5))
    with pytest.raises(BodyError):
        fetching._counted(body[: int(len(body) * cut)])
    with pytest.raises(BodyError):
        fetching._counted(b'{"error": true}')


def test_a_complete_fetch_is_found_only_while_valid() -> None:
    lake = get_settings().lake()
    the_spec = spec()
    key = fetching.fetch_key(the_spec, "x > 1", 42)
    assert key != fetching.fetch_key(the_spec, "x > 1", 43)  # another table snapshot
    assert key != fetching.fetch_key(the_spec, "x > 2", 42)  # another $where
    folder = fetching.raw_dir(lake, the_spec, "run-1")
    pages = tuple(f"{folder}/page-{n:06d}.json" for n in (1, 2))
    for page in pages:
        lake.write_bytes(page, b"[]")
    progress = fetching.FetchProgress(rows=0, pages=2, urls=pages, began="2024-03-01T00:00:00")
    fetching.record_complete(
        lake, the_spec, key=key, run_id="run-1", where="x > 1", progress=progress
    )
    found = fetching.find_complete(lake, the_spec, key)
    assert found is not None and found.pages == pages and found.run_id == "run-1"
    assert fetching.find_complete(lake, the_spec, "another-key") is None
    # the portal's rows changed since, or it does not say: fetched again
    assert (
        fetching.find_complete(lake, replace(the_spec, rows_updated_at=1_700_000_001), key) is None
    )
    assert fetching.find_complete(lake, replace(the_spec, rows_updated_at=None), key) is None
    lake.remove(pages[1])  # pruned
    assert fetching.find_complete(lake, the_spec, key) is None
