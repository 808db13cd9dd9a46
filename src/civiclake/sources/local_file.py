"""The fetch step for files a user already has (``--from-file``): any spec's raw files can
come from disk instead of its source; the stage then reads them from the raw zone as usual."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from civiclake.errors import CivicLakeError, SourceError, describe

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


@contextlib.contextmanager
def naming_user_file(lake: Lake, path: str, urls: Sequence[str]) -> Iterator[None]:
    """Errors raised while staging a user's file (copied to ``urls``) name the user's ``path``:
    the user knows that file, not its raw-zone copy. A failure no reader turned into a
    ``CivicLakeError`` is one line saying the file cannot be read."""
    import pyarrow as pa

    try:
        yield
    except CivicLakeError as exc:
        text = str(exc)
        for url in urls:
            for shown in filter(None, (url, lake.local_path(url))):
                text = text.replace(shown, path)
        if text == str(exc):  # not about the file (a warehouse's, a refusal): as it is
            raise
        raise type(exc)(text) from None
    except (OSError, EOFError, ValueError, pa.ArrowException) as exc:
        raise SourceError(
            f"{path}: cannot read it ({describe(exc)}): is the file complete? (download it again)"
        ) from None
