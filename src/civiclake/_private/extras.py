"""Optional drivers: say which extra to install instead of failing with an import error.

Every optional backend (the lake's fsspec drivers, the BigQuery client) is imported only when
used; when it is missing the user gets one line with the pip command, not a traceback or an
``unexpected ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.util

from civiclake.errors import ParameterError


def is_installed(module: str) -> bool:
    """Whether ``module`` (dotted) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (``google`` for google.cloud...)
        return False


def install_hint(extra: str | None, package: str) -> str:
    return f"pip install 'civiclake[{extra}]'" if extra else f"pip install '{package}'"


def require(module: str, *, package: str, extra: str | None, needed_by: str) -> None:
    """Fail with ``{needed_by} needs {package}: pip install ...`` when ``module`` is missing."""
    if not is_installed(module):
        raise ParameterError(f"{needed_by} needs {package}: {install_hint(extra, package)}")
