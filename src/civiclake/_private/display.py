"""What people read: consoles that print text verbatim, and numbers formatted by what they are.

Rich interprets ``[...]`` as style markup and ``:name:`` as emoji codes by default, so a
message saying ``pip install 'civiclake[s3]'`` lost its ``[s3]`` and a SQL value ``a[s3]b``
printed as ``ab``. Every console civiclake prints through has markup, emoji and highlighting
off; colour is given explicitly with ``Text`` styles, never by markup inside a string.

Quantities get thousands separators; identifiers never do (a snapshot id is copied into
queries and tools: ``8465074429383510934``, not ``8,465,074,429,383,510,934``).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

ID_SUFFIXES = ("_id", "_ids")


def plain_console(*, stderr: bool = False, width: int | None = None) -> Console:
    """A console that prints every string exactly as given."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, width=width)


def styled(text: str, style: str) -> Text:
    """``text`` in ``style``, without interpreting anything inside it."""
    return Text(text, style=style)


def is_identifier(key: str) -> bool:
    """Whether a summary field holds an id (``snapshot_id``, ``run_id``, ...), not a quantity."""
    key = key.lower()
    return key == "id" or key.endswith(ID_SUFFIXES)


def display_value(key: str, value: Any) -> str:
    """``value`` of the field ``key`` as a person should read it."""
    if isinstance(value, bool) or is_identifier(key):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
