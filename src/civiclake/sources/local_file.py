"""The fetch step for files a user already has (``--from-file``): any spec's raw files can
come from disk instead of its source; the stage then reads them from the raw zone as usual."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from civiclake.errors import SourceError

if TYPE_CHECKING:
    from civiclake.lake import Lake


def copy_local_file(lake: Lake, path: str, url: str, file_types: Sequence[str]) -> str:
    """``--from-file``: a file already on disk into the raw zone at ``url`` (atomically); a
    CSV cut off mid-row is refused (it would replace its slice with part of it)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not name.lower().endswith(tuple(file_types)):
        raise SourceError(f"{path}: unsupported file type (expected {', '.join(file_types)})")
    try:
        lake.copy_from(path, url)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    if name.lower().endswith((".csv", ".csv.gz")):
        from civiclake.sources.csv_check import TruncatedFile, check_complete

        try:
            check_complete(lake, url, path)
        except TruncatedFile:
            lake.remove(url)
            raise
    return url
