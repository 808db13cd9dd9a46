"""Engines run the stage step: raw files -> data files of a table and its rejects.

``arrow`` (the default) runs in this process with bounded memory; ``spark`` runs the same
transform on a Spark cluster (``CIVICLAKE_SPARK_MASTER``) and the driver commits. An engine is
one module with a ``stage`` function of the signature of ``arrow.stage``; the flows pick it by
name (``CIVICLAKE_ENGINE``), so a distributed engine plugs in here without touching a flow.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from civiclake.errors import ParameterError

ENGINES = {
    "arrow": "civiclake.pipeline.engines.arrow",
    "spark": "civiclake.pipeline.engines.spark",  # needs civiclake[spark] and a Java runtime
}
DEFAULT_ENGINE = "arrow"


def check_engine(name: str) -> None:
    """Refuse an unknown engine name (before anything starts; imports no engine)."""
    if name not in ENGINES:
        known = ", ".join(sorted(ENGINES))
        raise ParameterError(f"unknown engine {name!r} (engines: {known})")


def get_stage(name: str = DEFAULT_ENGINE) -> Callable[..., Any]:
    """The ``stage`` function of engine ``name``."""
    check_engine(name)
    return import_module(ENGINES[name]).stage  # type: ignore[no-any-return]
