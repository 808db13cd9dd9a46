"""``civiclake server start|stop|status``: one local Prefect server the run commands reuse
(``civiclake._private.local_server``; see the README)."""

from __future__ import annotations

import typer

from civiclake.cli._base import HELP_MARKUP, err, out, user_errors
from civiclake.config import get_settings
from civiclake.errors import CivicLakeError

server_app = typer.Typer(
    help="A local Prefect server in the background that run commands reuse (see the README).",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)
SERVER_NOT_RUNNING_EXIT = 3  # `status` when no server runs (the LSB init-script convention)


def use_local_server() -> None:
    """Before a run imports Prefect: the civiclake server instead of a temporary one, when no
    Prefect API URL is configured (civiclake._private.local_server)."""
    from civiclake._private import local_server

    line = local_server.use_for_run(get_settings().home_dir)
    if line:
        err.print(line, highlight=False, soft_wrap=True)


@server_app.command("start")
@user_errors
def server_start(
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port on 127.0.0.1 [default: the last one, or free]."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Seconds to wait until it answers [default: 120]."
    ),
) -> None:
    """Start the local Prefect server in the background (nothing to do when it runs)."""
    from civiclake._private import local_server

    now, started = local_server.start(get_settings().home_dir, port, timeout)
    assert now.server is not None
    if not started and port is not None and port != now.server.port:
        raise CivicLakeError(
            f"the civiclake Prefect server already runs on port {now.server.port}: "
            "civiclake server stop, then start it with --port"
        )
    verb = "started" if started else "already running"
    out.print(
        f"{verb}: {now.server.url} (PREFECT_API_URL {now.server.api_url}), pid {now.server.pid}; "
        "run commands use it, civiclake server stop stops it",
        highlight=False,
        soft_wrap=True,
    )


@server_app.command("status")
@user_errors
def server_status() -> None:
    """Print url, pid and uptime: exit 0 running, 3 not running, 1 running but not answering."""
    from civiclake._private import local_server

    home = get_settings().home_dir
    now = local_server.status(home)
    folder = local_server.state_dir(home)
    if now.server is None:
        stale = f" (removed a stale pid file: pid {now.stale} is gone)" if now.stale else ""
        out.print(f"not running{stale}; state in {folder}", highlight=False, soft_wrap=True)
        raise SystemExit(SERVER_NOT_RUNNING_EXIT)  # not an error: no "error:" line
    line = (
        f"url {now.server.url}, pid {now.server.pid}, uptime {now.server.uptime()}; "
        f"state in {folder}"
    )
    if now.state != "running":
        raise CivicLakeError(f"not answering: {line}: civiclake server stop, then start")
    out.print(f"running: {line}", highlight=False, soft_wrap=True)


@server_app.command("stop")
@user_errors
def server_stop() -> None:
    """Stop the local Prefect server (nothing to do when it does not run)."""
    from civiclake._private import local_server

    was = local_server.stop(get_settings().home_dir)
    if was.server is None:
        out.print("not running", highlight=False)
    else:
        out.print(f"stopped (pid {was.server.pid})", highlight=False)
