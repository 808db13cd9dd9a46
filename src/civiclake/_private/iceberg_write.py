"""Stream Arrow chunks into ONE Iceberg append snapshot with bounded memory.

PyIceberg's public ``Transaction.append`` takes a whole ``pa.Table`` (a ``RecordBatchReader`` only
for unpartitioned tables), so a multi-million-row load would either hold everything in memory or
produce one snapshot per chunk. This does what ``Transaction.append`` does, chunk by chunk, inside
one snapshot producer. It uses PyIceberg internals: the dependency pins the minor version.

Each chunk is first cut into one slice per partition: PyIceberg otherwise filters the whole chunk
once per partition value (measured: 1.4 s of a 3.2 s commit of 1M rows over 70 months).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.table import Transaction


def split_by_partition(tx: Transaction, chunk: pa.Table) -> Iterator[pa.Table]:
    """Zero-copy slices of ``chunk`` that each hold one partition (single-field specs)."""
    spec = tx.table_metadata.spec()
    if spec.is_unpartitioned() or len(spec.fields) != 1 or chunk.num_rows == 0:
        yield chunk
        return
    field = spec.fields[0]
    schema = tx.table_metadata.schema()
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


def append_chunks(
    tx: Transaction, chunks: Iterable[pa.Table], snapshot_properties: dict[str, str]
) -> int:
    """Write every chunk's data files and add them all in a single append snapshot."""
    counter = itertools.count(0)
    rows = 0
    checked = False
    with tx._append_snapshot_producer(snapshot_properties) as append:
        for chunk in chunks:
            if chunk.num_rows == 0:
                continue
            if not checked:
                _check_pyarrow_schema_compatible(
                    tx.table_metadata.schema(),
                    provided_schema=chunk.schema,
                    format_version=tx.table_metadata.format_version,
                )
                checked = True
            for part in split_by_partition(tx, chunk):
                for data_file in _dataframe_to_data_files(
                    table_metadata=tx.table_metadata,
                    write_uuid=append.commit_uuid,
                    df=part,
                    io=tx._table.io,
                    counter=counter,
                ):
                    append.append_data_file(data_file)
            rows += chunk.num_rows
            del chunk
            # Arrow's allocator keeps freed chunks cached; give them back so RSS stays bounded
            pa.default_memory_pool().release_unused()
    return rows
