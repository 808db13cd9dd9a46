"""``civiclake doctor``: is the configured lake, catalog and warehouse reachable and writable?

Each check proves what a run needs (a probe object written, read and deleted; a table created
in a transaction that is rolled back) and, when it fails, says precisely what is missing: no
credentials, no container, a wrong endpoint. Messages name settings, never their values.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from civiclake.config import Settings
from civiclake.errors import CivicLakeError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _run(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except CivicLakeError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # a driver's error we have no words for: its type, not its text
        return Check(name, False, f"unexpected {type(exc).__name__}")


def check_lake(settings: Settings) -> str:
    lake = settings.lake()
    lake.check_writable()
    source = lake.credential_source()
    return f"{lake.url}: writable (probe written, read, deleted); credentials: {source}"


def check_catalog(settings: Settings) -> str:
    """The catalog answers, and Iceberg's own FileIO can write where table files go."""
    from pyiceberg.io import load_file_io

    from civiclake import tables

    lake = settings.lake()
    lake.check_credentials()
    lake.check_endpoint()
    try:
        catalog = tables.load_catalog(settings)
        # the tables `civiclake tables` lists (not those never loaded)
        count = len(tables.summarize(catalog))
    except CivicLakeError:
        raise
    except Exception as exc:
        raise CivicLakeError(
            f"catalog {_catalog_label(settings)} is not usable ({type(exc).__name__})"
        ) from None
    probe = f"{settings.warehouse_url}/_civiclake/probe-{uuid.uuid4().hex}"
    try:
        io = load_file_io({**catalog.properties}, settings.warehouse_url)
        with io.new_output(probe).create(overwrite=True) as out:
            out.write(b"civiclake iceberg probe")
        io.delete(probe)
    except Exception as exc:
        raise CivicLakeError(
            f"Iceberg cannot write under {settings.warehouse_url}: "
            + lake.backend.explain(exc, lake.url)
        ) from None
    tables_text = f"{count} table" + ("" if count == 1 else "s")
    return (
        f"{_catalog_label(settings)} ({settings.resolved_catalog_name}): {tables_text}; "
        f"Iceberg FileIO writes {settings.warehouse_url}"
    )


def _catalog_label(settings: Settings) -> str:
    uri = settings.resolved_catalog_uri
    if uri.startswith("sqlite:///"):
        return "SQLite " + uri.removeprefix("sqlite:///")
    return uri.split("@")[-1] if "@" in uri else uri  # no user:password of a SQL URI


def configured_warehouses(settings: Settings) -> list[str]:
    """DuckDB always (the embedded default), and every warehouse with settings present."""
    from civiclake.warehouse import WAREHOUSE_MODULES

    return [kind for kind, entry in WAREHOUSE_MODULES.items() if entry.configured(settings)]


def check_warehouse(settings: Settings, kind: str) -> str:
    from civiclake.warehouse import open_warehouse

    with open_warehouse(kind, settings) as warehouse:
        return warehouse.check()


def run_checks(settings: Settings, warehouses: list[str] | None = None) -> Iterator[Check]:
    """The checks in order; each one runs even when an earlier one failed."""
    yield _run("lake", lambda: check_lake(settings))
    yield _run("catalog", lambda: check_catalog(settings))
    for kind in warehouses or configured_warehouses(settings):
        yield _run(f"warehouse {kind}", lambda kind=kind: check_warehouse(settings, kind))
