"""Stream Arrow chunks into ONE Iceberg append snapshot with bounded memory.

PyIceberg's public ``Transaction.append`` takes a whole ``pa.Table`` (a ``RecordBatchReader`` only
for unpartitioned tables), so a multi-million-row load would either hold everything in memory or
produce one snapshot per chunk. This does what ``Transaction.append`` does, chunk by chunk, inside
one snapshot producer. It uses PyIceberg internals: the dependency pins the minor version.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pyarrow as pa
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.table import Transaction


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
            for data_file in _dataframe_to_data_files(
                table_metadata=tx.table_metadata,
                write_uuid=append.commit_uuid,
                df=chunk,
                io=tx._table.io,
                counter=counter,
            ):
                append.append_data_file(data_file)
            rows += chunk.num_rows
    return rows
