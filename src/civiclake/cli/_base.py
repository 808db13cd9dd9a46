"""What every command shares: the error rule, the consoles, the common options, the output.

Commands that run no flow (``sql``, ``tables``, ``--help``) never import Prefect: its import
and ephemeral server cost seconds on a small machine.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import date
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

import click
import typer
from rich.text import Text

from civiclake._private.display import plain_console, styled
from civiclake.config import Settings, get_settings
from civiclake.errors import CivicLakeError, ParameterError

# Help texts are plain text: with rich markup on, "[default: 7]" in a help line vanished.
HELP_MARKUP = None
app = typer.Typer(
    help="Public open data into a lake, Apache Iceberg tables and a warehouse, with Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=HELP_MARKUP,
)


def group(help_text: str) -> typer.Typer:
    """A command group (``civiclake bnt ...``) with the app's help conventions."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=HELP_MARKUP)


def _plain_help_labels() -> None:
    """Help in the words people know: ``QUERY`` and ``--limit INTEGER``, not Typer's internal
    labels (``{query}``, ``query <str>``, ``<int range>``, ``[[TABLE ...]]...``)."""
    from typer import core

    labels = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "BOOLEAN"}

    def option_type(self: Any, ctx: click.Context) -> str | None:
        if self.metavar is not None:
            return str(self.metavar)
        if getattr(self, "is_flag", False):
            return None
        desc = self.type_descriptor
        if desc.is_choice:
            return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
        bare = original_type(self, ctx).strip("<>")
        bare = bare.removesuffix(" range").removeprefix("list[").removesuffix("]")
        return labels.get(bare, bare.upper())

    def argument_usage(self: Any) -> str:
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    original_type = core._TyperParameter.display_type
    core.TyperOption.display_type_rich = option_type  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
    core.TyperArgument._rich_display_name = lambda self: self.metavar or self.name.upper()  # type: ignore[method-assign]
    core.TyperArgument._usage_display_name = argument_usage  # type: ignore[method-assign]


_plain_help_labels()

# Markup off: messages and data print verbatim (``civiclake[s3]``, a value ``a[s3]b``).
out = plain_console()
err = plain_console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


DEBUG_ENV = "CIVICLAKE_DEBUG"
_state = {"debug": False}


def debugging() -> bool:
    """Whether ``--debug`` or ``CIVICLAKE_DEBUG=1`` asked for tracebacks."""
    flag = os.environ.get(DEBUG_ENV, "").strip().lower()
    return _state["debug"] or flag in ("1", "true", "yes", "on")


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False,
        "--debug",
        help=f"On an unexpected error also print the Python traceback (or set {DEBUG_ENV}=1).",
    ),
) -> None:
    """Public open data into a lake, Apache Iceberg tables and a warehouse, with Prefect."""
    _state["debug"] = debug


def one_line(text: str) -> str:
    """A message on one line: a user reads the last line of a failed command."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def describe_unexpected(exc: BaseException) -> str:
    """A short description of an exception civiclake did not anticipate."""
    from civiclake.errors import describe

    return describe(exc)


def fail(message: str, exit_code: int) -> typer.Exit:
    """Print ``error: message`` (one line) on stderr; the Exit to raise."""
    if "prefect" in sys.modules:  # its shutdown lines ("Stopping temporary server") stay out
        logging.getLogger("prefect").setLevel(logging.WARNING)
    err.print(Text.assemble(styled("error:", "red"), f" {one_line(message)}"), soft_wrap=True)
    return typer.Exit(exit_code)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The central error rule: civiclake's errors as one line and their exit code; anything
    else one line and exit 1, the traceback only with ``--debug`` or ``CIVICLAKE_DEBUG=1``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CivicLakeError as exc:
            if debugging():
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            # Ctrl-C: left to the interrupt handling (issue 17 maps it to exit 130).
            raise
        except Exception as exc:
            if debugging():
                traceback.print_exc()
                raise fail(describe_unexpected(exc), 1) from None
            hint = f" (details: --debug or {DEBUG_ENV}=1)"
            raise fail(describe_unexpected(exc) + hint, 1) from None

    return wrapper


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


LAKE_HELP = "Lake URL (file://, abfs://, s3://, gs://) instead of CIVICLAKE_LAKE_URL."
# Options several commands share (typer reads them; one declaration each).
LAKE_OPTION = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False)
LAKE_BLOCK_OPTION = typer.Option(
    None, "--lake-block", help="A civiclake-lake Prefect block instead of CIVICLAKE_LAKE_URL."
)
TOKEN_BLOCK_OPTION = typer.Option(
    None, "--socrata-token-block", help="A Prefect Secret block holding the app token."
)
WAREHOUSE_BLOCK_OPTION = typer.Option(
    None,
    "--warehouse-block",
    help="A civiclake-postgres or civiclake-bigquery Prefect block (with --to).",
)
PAGE_SIZE_OPTION = typer.Option(
    None, "--page-size", min=1, help="Rows per API page ($limit) [default: 50000]."
)
ENGINE_OPTION = typer.Option(
    None,
    "--engine",
    help="Engine of the stage step: arrow (this process) or spark (CIVICLAKE_SPARK_MASTER) "
    "[default: CIVICLAKE_ENGINE, else arrow].",
)


def use_engine(engine: str | None) -> None:
    """``--engine``: checked, then the run (checks and flow, in this process) reads it from
    the environment as it reads ``CIVICLAKE_ENGINE``."""
    if engine is None:
        return
    from civiclake.pipeline.engines import check_engine

    check_engine(engine)
    os.environ["CIVICLAKE_ENGINE"] = engine


ALLOW_EMPTY_OPTION = typer.Option(
    False,
    "--allow-empty",
    help="Let a load that holds no row empty a range that has rows (refused otherwise).",
)


def lake_settings(lake: str | None = None) -> Settings:
    """The environment's settings, with the lake given on the command line, if any."""
    return get_settings(lake_url=lake) if lake else get_settings()


def parse_date(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ParameterError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


def partitions_text(values: list[str]) -> str:
    """Partitions as a person reads them: all of a few, else the first, the last and how many
    (the values are the partitions actually changed, so the count is theirs, not a span's)."""
    if not values:
        return "none"
    if len(values) <= 6:
        return ", ".join(values)
    return f"{values[0]} .. {values[-1]} ({len(values)} partitions)"


def print_table(renderable: Any) -> None:
    """A table on stdout: fitted to a terminal, and never cut when piped (every value whole)."""
    if out.is_terminal:
        out.print(renderable)
        return
    natural = plain_console(width=1_000_000).measure(renderable).maximum
    saved = out._width  # None: Rich's default (80 columns when not a terminal)
    out.width = max(out.width, natural)
    try:
        out.print(renderable)
    finally:
        out._width = saved


def wrote_records(
    records: list[dict[str, Any]], fields: Sequence[str], output: OutputFormat
) -> bool:
    """``records`` as JSON or CSV on stdout for scripts; False for the table format (people)."""
    if output is OutputFormat.json:
        from civiclake._private.values import dumps

        sys.stdout.write(dumps(records) + "\n")  # ids beyond 2^53 as exact strings
        return True
    if output is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return True
    return False


def count_text(value: int) -> str:
    return f"{value:,}"


def size_text(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)
