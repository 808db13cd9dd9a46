"""The ``civiclake`` command (typer): one module per command group.

``app`` is the entry point's (``civiclake.cli:main``); the modules: ``bnt``, ``taxi``,
``socrata`` (the run commands, their checks from ``civiclake.flows.preflight``), ``tables``
(``sql``, ``tables``, ``history``, ``rollback``), ``report``, ``maintain``, ``doctor``,
``deploy``, ``server``; ``_base`` (the error rule, consoles, shared options and output) and
``_runs`` (starting a flow, its summary). Commands that run no flow never import Prefect.
"""

from __future__ import annotations

import traceback

from civiclake.cli import bnt, deploy, doctor, maintain, report, server, socrata, tables, taxi
from civiclake.cli._base import app, debugging, describe_unexpected, err, fail, out
from civiclake.cli._runs import print_summary as _print_summary
from civiclake.cli.taxi import print_taxi_summary as _print_taxi_summary

__all__ = ["_print_summary", "_print_taxi_summary", "app", "err", "main", "out"]

# Registered in the order `civiclake --help` lists them: commands, then the groups.
app.command("deploy")(deploy.deploy)
app.command("doctor")(doctor.doctor)
app.command("sql")(tables.sql)
app.command("tables")(tables.list_tables)
app.command("report")(report.report)
app.command("history")(tables.history_command)
app.command("rollback")(tables.rollback_command)
app.command("maintain")(maintain.maintain_command)
app.add_typer(taxi.taxi_app, name="taxi")
app.add_typer(bnt.bnt_app, name="bnt")
app.add_typer(socrata.socrata_app, name="socrata")
app.add_typer(server.server_app, name="server")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise  # see user_errors: issue 17's interrupt handling
    except SystemExit as done:  # every command ends here (Typer's standalone mode)
        from civiclake._private import fast_exit

        fast_exit.after_run(done.code)  # after a flow: no 2-3 s interpreter teardown
        raise
    except Exception as exc:  # outside any command (option parsing, callbacks)
        if debugging():
            traceback.print_exc()
        raise SystemExit(fail(describe_unexpected(exc), 1).exit_code) from None
