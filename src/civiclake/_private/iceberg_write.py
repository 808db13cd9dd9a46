"""Write Arrow chunks as Iceberg data files with bounded memory; add them in ONE append snapshot.

Writing and committing are two steps (the pattern Ray Data, Daft and Polars use for Iceberg):
``write_data_files`` turns a stream of chunks into data files in the table's location and
returns their descriptors (``DataFiles``, picklable, so a process or an engine's worker can
write and a driver commit); ``add_data_files`` adds them to a transaction. Files written and
never committed are orphans, invisible to readers, which ``civiclake maintain`` removes.

PyIceberg's public ``Transaction.append`` takes a whole ``pa.Table`` (a ``RecordBatchReader`` only
for unpartitioned tables), so a multi-million-row load would either hold everything in memory or
produce one snapshot per chunk. This does what ``Transaction.append`` does, chunk by chunk, inside
one snapshot producer. It uses PyIceberg internals: the dependency pins the minor version.

Each chunk is first cut into one slice per partition: PyIceberg otherwise filters the whole chunk
once per partition value (measured: 1.4 s of a 3.2 s commit of 1M rows over 70 months).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.table import Transaction

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.manifest import DataFile
    from pyiceberg.table.metadata import TableMetadata


@dataclass(frozen=True)
class DataFiles:
    """Data files written for a table and not yet committed: what a writer hands the commit.

    ``spec_id`` and ``schema_id`` record the table state they were written for: a commit
    replayed after another writer changed the partitioning must write them again.
    """

    files: tuple[DataFile, ...]
    rows: int
    spec_id: int
    schema_id: int

    def __add__(self, other: DataFiles) -> DataFiles:
        if (self.spec_id, self.schema_id) != (other.spec_id, other.schema_id):
            raise ValueError("data files written for different table versions")
        return DataFiles(
            self.files + other.files, self.rows + other.rows, self.spec_id, self.schema_id
        )


def split_by_partition(metadata: TableMetadata, chunk: pa.Table) -> Iterator[pa.Table]:
    """Zero-copy slices of ``chunk`` that each hold one partition (single-field specs)."""
    spec = metadata.spec()
    if spec.is_unpartitioned() or len(spec.fields) != 1 or chunk.num_rows == 0:
        yield chunk
        return
    field = spec.fields[0]
    schema = metadata.schema()
    source = schema.find_field(field.source_id)
    keys = field.transform.pyarrow_transform(source.field_type)(chunk.column(source.name))
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if keys.null_count:
        yield chunk  # let PyIceberg handle null partitions its own way
        return
    order = pc.sort_indices(keys)
    values = keys.to_numpy(zero_copy_only=False)
    positions = order.to_numpy()
    if not np.all(positions[:-1] < positions[1:]):  # not already in partition order
        chunk = chunk.take(order)
        values = values[positions]
    bounds = [0, *(np.flatnonzero(values[1:] != values[:-1]) + 1).tolist(), len(values)]
    for start, stop in itertools.pairwise(bounds):
        yield chunk.slice(start, stop - start)


def write_data_files(metadata: TableMetadata, io: FileIO, chunks: Iterable[pa.Table]) -> DataFiles:
    """Write every chunk as data files of the table ``metadata`` describes; commit nothing."""
    counter = itertools.count(0)
    write_uuid = uuid.uuid4()
    files: list[DataFile] = []
    rows = 0
    checked = False
    for chunk in chunks:
        if chunk.num_rows == 0:
            continue
        if not checked:
            _check_pyarrow_schema_compatible(
                metadata.schema(),
                provided_schema=chunk.schema,
                format_version=metadata.format_version,
            )
            checked = True
        for part in split_by_partition(metadata, chunk):
            files.extend(
                _dataframe_to_data_files(
                    table_metadata=metadata, write_uuid=write_uuid, df=part, io=io, counter=counter
                )
            )
        rows += chunk.num_rows
        del chunk
        # Arrow's allocator keeps freed chunks cached; give them back so RSS stays bounded
        pa.default_memory_pool().release_unused()
    return DataFiles(tuple(files), rows, metadata.default_spec_id, metadata.current_schema_id)


def add_data_files(
    tx: Transaction, written: DataFiles, snapshot_properties: dict[str, str]
) -> None:
    """Add ``written`` to ``tx`` as one append snapshot."""
    with tx._append_snapshot_producer(snapshot_properties) as append:
        for data_file in written.files:
            append.append_data_file(data_file)


def append_chunks(
    tx: Transaction, chunks: Iterable[pa.Table], snapshot_properties: dict[str, str]
) -> int:
    """Write every chunk's data files and add them all in a single append snapshot."""
    written = write_data_files(tx.table_metadata, tx._table.io, chunks)
    add_data_files(tx, written, snapshot_properties)
    return written.rows
