"""One pipeline for every dataset: plan -> fetch -> stage -> commit -> warehouses.

- plan: the ``Slice`` a load replaces (``civiclake.slices``).
- fetch: the source's files into the raw zone of the lake (each source's own module).
- stage: raw files -> Iceberg data files of the table and of its rejects, run by an *engine*
  (``civiclake.pipeline.engines``: Arrow on this machine; others plug in behind the same call),
  each batch through the spec's pure transform (``contract.DatasetSpec.transform``).
- commit: one Iceberg transaction per table deletes the slice and adds the staged data files
  (``civiclake.tables.commit_files``); nothing is visible before it, a crash leaves orphans.
- warehouses: loaded from the same data files (``--to``).
"""

from civiclake.pipeline.contract import (
    RAW_RECORD,
    REJECT_REASON,
    DatasetSpec,
    RunContext,
    Staged,
    output_schema,
    split,
)

__all__ = [
    "RAW_RECORD",
    "REJECT_REASON",
    "DatasetSpec",
    "RunContext",
    "Staged",
    "output_schema",
    "split",
]
