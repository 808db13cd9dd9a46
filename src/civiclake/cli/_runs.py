"""Starting a flow run from a command, and printing its summary."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from rich.table import Table as RichTable

from civiclake import interrupts
from civiclake._private.display import display_value
from civiclake.cli._base import debugging, describe_unexpected, partitions_text, print_table
from civiclake.errors import CivicLakeError


def start_run(flow: str, head_start: Callable[[], None] | None = None) -> ModuleType:
    """Once the command's checks passed: Ctrl-C handling (stop now, one line, exit 130:
    civiclake.interrupts), the run's ``head_start`` (work begun before Prefect is imported,
    which the flow takes over: ``civiclake._private.head_start``), the flow's module
    ``civiclake.flows.<flow>`` (imports Prefect), and a configured Prefect server that answers
    (the civiclake server, reused or started, when no Prefect API URL is configured:
    ``civiclake.cli.server``)."""
    from civiclake.cli.server import use_local_server

    interrupts.install(guard_server=False)
    if head_start is not None:
        head_start()
    if flow in CHARTED_FLOWS:
        warm_charts()
    use_local_server()  # before Prefect is imported: it reads PREFECT_API_URL once
    interrupts.install()
    module = importlib.import_module(f"civiclake.flows.{flow}")
    prefect_ready()
    return module


CHARTED_FLOWS = ("bnt", "tlc")
"""Flows whose summary artifact draws a chart (``civiclake.report.artifact``)."""


def warm_charts() -> threading.Thread:
    """Start the artifact's chart renderer now, in a thread, while the flow's module imports
    and the run fetches: its first chart cost the B&T run 0.5-0.8 s at the end (vl-convert
    starting its JavaScript runtime, without the GIL). A failure here is the artifact's to
    report, so it is ignored."""

    def warm() -> None:
        with contextlib.suppress(Exception):
            from civiclake.report.artifact import warm

            warm()

    thread = threading.Thread(target=warm, name="civiclake-warm-charts", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def command_flow_run() -> Iterator[None]:
    """Prefect settings for a flow run the command runs in its own process: no flow-run
    heartbeats unless configured (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, env or profile).

    Prefect's heartbeat thread sleeps in 1 s steps and the run's end joins it: 0-1 s added to
    every command (0.4-0.7 s measured in traced B&T runs). A heartbeat lets a server
    automation tell a crashed run; a command's run ends with the command, and Ctrl-C ends it
    with one line (``civiclake.interrupts``). Runs of a worker or a deployment keep Prefect's
    default."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield  # the user's setting
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextlib.contextmanager
def summary_on(error: type[Exception]) -> Iterator[None]:
    """The run's summary, when ``error`` carries one, printed before its one-line message."""
    try:
        yield
    except error as exc:
        summary = getattr(exc, "summary", None)
        if summary:
            print_summary(summary)
        raise


class _NoTracebacks(logging.Filter):
    """Keeps Python tracebacks out of Prefect's console lines (the run's API logs keep them):
    a failed command ends with its one ``error:`` line, not 80 lines of frames."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not debugging():
            record.exc_info = None
            record.exc_text = None
        return True


def prefect_ready() -> None:
    """After a flow module is imported, before it runs: a configured Prefect server answers
    (else one line, exit 1), and Prefect's console shows no tracebacks."""
    from prefect.logging.handlers import PrefectConsoleHandler
    from prefect.settings import PREFECT_API_URL

    loggers = [
        logging.getLogger(),
        *(logging.getLogger(n) for n in logging.root.manager.loggerDict),
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _NoTracebacks) for f in handler.filters
            ):
                handler.addFilter(_NoTracebacks())
    url = PREFECT_API_URL.value()
    if not url:
        return  # a temporary server is started for the run
    import httpx

    try:
        # unreachable is the failure to report; an answer of any status means a server is there
        httpx.get(f"{url.rstrip('/')}/health", timeout=10)
    except httpx.TransportError as exc:
        raise CivicLakeError(
            f"cannot reach the Prefect server at PREFECT_API_URL={url} ({describe_unexpected(exc)})"
            ": start it (prefect server start) or unset PREFECT_API_URL to run without one"
        ) from None


def print_summary(summary: dict[str, Any]) -> None:
    table = RichTable(title=f"{summary['table']} {summary['range']}", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key in ("table", "range"):
            continue
        if isinstance(value, list):
            value = partitions_text(value)
        table.add_row(key.replace("_", " "), display_value(key, value))
    print_table(table)
