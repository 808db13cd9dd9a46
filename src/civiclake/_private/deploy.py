"""What ``civiclake deploy`` sets up on a Prefect server besides the deployments themselves."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True when created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True


def register_block_types() -> list[str]:
    """civiclake's block types, registered so the UI can create documents of them."""
    from civiclake.blocks import WAREHOUSE_BLOCKS, LakeBlock

    slugs = []
    for block in (LakeBlock, *WAREHOUSE_BLOCKS):
        block.register_type_and_schema()
        slugs.append(block.get_block_type_slug())
    return slugs
