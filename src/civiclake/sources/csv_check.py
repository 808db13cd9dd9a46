"""Refuse a CSV file that was cut off (an interrupted download or ``head -c``).

A cut-off export still parses: its last record loses fields or ends inside a quoted value, and
the rows after the cut are simply missing, so the file's last day (or month) would be replaced
by a fraction of itself. The check streams the file once (gzip too), counting quote characters
and keeping its tail: a file that does not end with a newline must end with a whole record.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import zlib
from typing import Any

from civiclake.errors import ParameterError
from civiclake.lake import Lake

CHUNK_BYTES = 1024 * 1024
TAIL_BYTES = 64 * 1024


class TruncatedFile(ParameterError):
    """The file ends in the middle of a record."""


def check_complete(lake: Lake, url: str, name: str) -> None:
    """Raise :class:`TruncatedFile` when ``url`` (CSV, or CSV.gz) ends mid-record.

    Refused: an unterminated quote; a last line without final newline that has fewer fields
    than the header or ends with a separator (a cut right after a comma). A complete last
    line without a final newline is fine.
    """
    quotes = 0
    header = b""
    tail = b""
    try:
        with (
            lake.open(url) as handle,
            (
                gzip.open(handle) if url.lower().endswith(".gz") else contextlib.nullcontext(handle)
            ) as stream,
        ):
            stream_: Any = stream
            while chunk := stream_.read(CHUNK_BYTES):
                quotes += chunk.count(b'"')
                if b"\n" not in header and len(header) < TAIL_BYTES:
                    header += chunk[:TAIL_BYTES]
                tail = (tail + chunk)[-TAIL_BYTES:]
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return  # a damaged gzip stream: the reader reports it, with what it could read
    if quotes % 2:
        raise TruncatedFile(
            f"{name}: truncated file: it ends inside a quoted value; download or export it again"
        )
    if not tail or tail.endswith((b"\n", b"\r")):
        return
    last_line = tail.rsplit(b"\n", 1)[-1]
    first_line = header.split(b"\n", 1)[0]
    if last_line == first_line:  # a header-only file without a final newline
        return
    expected = _fields(first_line)
    got = _fields(last_line)
    shown = last_line.decode("utf-8", "replace")
    if len(got) < len(expected):
        why = f"has {len(got)} of {len(expected)} fields"
    elif last_line.rstrip(b"\r").endswith(b","):
        why = "ends with a separator"
    else:
        return
    raise TruncatedFile(
        f"{name}: truncated file: its last record {shown!r} {why} and no line end; "
        "download or export it again"
    )


def _fields(line: bytes) -> list[str]:
    text = line.decode("utf-8-sig", "replace").rstrip("\r")
    return next(csv.reader(io.StringIO(text)), [])
