"""What ``civiclake deploy`` sets up on a Prefect server besides the deployments themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from civiclake.errors import ParameterError

PROCESS_POOL = "civiclake"
DOCKER_POOL = "civiclake-docker"
PULL_POLICIES = ("IfNotPresent", "Always", "Never")


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True when created."""
    return _ensure_pool(name, "process", {})


def ensure_docker_pool(name: str) -> bool:
    """Create the docker work pool ``name`` unless it exists; True when created.

    The job template comes from the installed prefect-docker: the server holds no template of
    its own for the type, and a pool without one gives the worker no image or volumes to use.
    """
    return _ensure_pool(name, "docker", docker_job_template())


def docker_job_template() -> dict[str, Any]:
    """prefect-docker's default base job template (image, image_pull_policy, env, volumes...)."""
    try:
        from prefect_docker.worker import DockerWorker
    except ImportError as exc:
        raise ParameterError(
            "--docker needs the prefect-docker collection: pip install 'civiclake[docker]'"
        ) from exc
    return DockerWorker.get_default_base_job_template()


def _ensure_pool(name: str, kind: str, template: dict[str, Any]) -> bool:
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=kind, base_job_template=template)
            )
            return True
    if pool.type != kind:
        raise ParameterError(f"work pool {name!r} exists with type {pool.type!r}, not {kind!r}")
    return False


def deployments(prefect_yaml: Path, *, docker: bool) -> dict[str, dict[str, Any]]:
    """prefect.yaml's deployments (``flow-name/deployment``) on the docker pool (``docker``)
    or on any other pool, each with the job variables prefect.yaml gives it."""
    import yaml

    with prefect_yaml.open() as handle:
        config = yaml.safe_load(handle) or {}
    found = {}
    for deployment in config.get("deployments") or []:
        pool = deployment.get("work_pool") or {}
        if (pool.get("name") == DOCKER_POOL) == docker:
            # flow/deployment: two flows may both have a `daily` deployment; `prefect deploy
            # --name flow-name/name` matches the entrypoint's function name (- for _)
            function = str(deployment.get("entrypoint", "")).rsplit(":", 1)[-1]
            key = f"{function.replace('_', '-')}/{deployment['name']}"
            found[key] = dict(pool.get("job_variables") or {})
    if not found:
        kind = "docker" if docker else "process"
        raise ParameterError(f"no {kind} deployments in {prefect_yaml}")
    return found


def register_block_types() -> list[str]:
    """civiclake's block types, registered so the UI can create documents of them."""
    from civiclake.blocks import WAREHOUSE_BLOCKS, LakeBlock

    slugs = []
    for block in (LakeBlock, *WAREHOUSE_BLOCKS):
        block.register_type_and_schema()
        slugs.append(block.get_block_type_slug())
    return slugs
