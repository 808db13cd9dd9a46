"""The local disk (``file://``): the zero-service default under CIVICLAKE_HOME."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from civiclake.lake._backend import LakeBackend


class LocalBackend(LakeBackend):
    name = "local"
    schemes: ClassVar[tuple[str, ...]] = ("file", "local")
    renames_atomically: ClassVar[bool] = True

    def explain(self, exc: BaseException, url: str) -> str:
        if isinstance(exc, PermissionError):
            return "permission denied: the folder is not writable"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror.lower()
        return super().explain(exc, url)

    def credential_source(self, options: Mapping[str, Any]) -> str | None:
        return "not needed (local disk)"


class MemoryBackend(LakeBackend):
    """fsspec's in-process ``memory://`` store: for tests and throwaway experiments."""

    name = "memory"
    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    # fsspec's memory store shows a file as soon as it is opened: stage it under a temp name
    renames_atomically: ClassVar[bool] = True
