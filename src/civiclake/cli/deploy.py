"""``civiclake deploy``: prefect.yaml's deployments and the block types on a server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from civiclake.cli._base import err, out, user_errors
from civiclake.errors import CivicLakeError, ParameterError


@user_errors
def deploy(
    project_dir: str | None = typer.Option(
        None, "--project-dir", help="Folder holding prefect.yaml [default: this checkout]."
    ),
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="Work pool to create if missing [default: civiclake, or civiclake-docker].",
        show_default=False,
    ),
    docker: bool = typer.Option(
        False,
        "--docker",
        help="The docker pool and its deployments (daily-docker, monthly-docker) instead.",
    ),
    image: str | None = typer.Option(
        None, "--image", help="--docker: image the runs start [default: civiclake:latest]."
    ),
    pull_policy: str | None = typer.Option(
        None,
        "--pull-policy",
        help="--docker: IfNotPresent, Always or Never [default: Never, a locally built image].",
    ),
) -> None:
    """Register prefect.yaml's deployments and civiclake's block types on a Prefect server."""
    import os
    import subprocess

    if not os.environ.get("PREFECT_API_URL"):
        raise ParameterError(
            "civiclake deploy needs a running Prefect server: start one with `prefect server "
            "start --host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if not docker and (image or pull_policy):
        raise ParameterError("--image and --pull-policy go with --docker")
    folder = Path(project_dir) if project_dir else _project_dir()
    if not (folder / "prefect.yaml").is_file():
        raise ParameterError(f"no prefect.yaml in {folder}")

    import civiclake.flows  # noqa: F401  (Prefect's offline defaults)
    from civiclake.cli import _deploy as setup

    if pull_policy is not None and pull_policy not in setup.PULL_POLICIES:
        raise ParameterError(
            f"--pull-policy: {pull_policy!r} is not one of {', '.join(setup.PULL_POLICIES)}"
        )
    found = setup.deployments(folder / "prefect.yaml", docker=docker)
    if docker:
        pool = pool or setup.DOCKER_POOL
        created = setup.ensure_docker_pool(pool)
    else:
        pool = pool or setup.PROCESS_POOL
        created = setup.ensure_process_pool(pool)
    err.print(f"work pool {pool!r} {'created' if created else 'exists'}")
    for slug in setup.register_block_types():
        err.print(f"block type {slug} registered")
    overrides = {
        key: value
        for key, value in (("image", image), ("image_pull_policy", pull_policy))
        if value is not None
    }
    # `prefect deploy --job-variable` replaces prefect.yaml's job variables rather than adding
    # to them, and is ignored when several deployments are registered at once: one call each.
    batches = (
        [([name], {**variables, **overrides}) for name, variables in found.items()]
        if overrides
        else [(list(found), {})]
    )
    for names, variables in batches:
        command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
        command += [arg for name in names for arg in ("--name", name)]
        for key, value in variables.items():
            text = value if isinstance(value, str) else json.dumps(value)
            command += ["--job-variable", f"{key}={text}"]
        command += ["--prefect-file", str(folder / "prefect.yaml")]
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            raise CivicLakeError("prefect deploy failed: " + (lines[-1] if lines else "no output"))
        out.print(done.stdout.strip())


def _project_dir() -> Path:
    """The checkout this civiclake runs from, or the current folder."""
    here = Path.cwd()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[3]):
        if (folder / "prefect.yaml").is_file() and (folder / "src" / "civiclake").is_dir():
            return folder
    return here
