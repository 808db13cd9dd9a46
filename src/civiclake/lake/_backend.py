"""The shape every lake backend has (one module per kind of storage, dlt-style).

A backend knows how its ecosystem finds credentials (the user's environment, never argv), how
to hand the same credentials to fsspec and to PyIceberg's FileIO, and how to turn its SDK's
errors into one precise sentence that never contains a secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

FSSPEC_FILE_IO = "pyiceberg.io.fsspec.FsspecFileIO"

# Words in an SDK error (class names, codes, messages) that say what went wrong.
_AUTH_MARKERS = (
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "ClientAuthenticationError",
    "AccessDenied",
    "Access Denied",
    "Forbidden",
    "403",
    "401",
    "InvalidToken",
    "invalid_grant",
    "PermissionError",
)
_NO_CREDENTIALS_MARKERS = (
    "NoCredentialsError",
    "Unable to locate credentials",
    "DefaultCredentialsError",
    "CredentialUnavailableError",
)
_MISSING_MARKERS = (
    "NoSuchBucket",
    "ContainerNotFound",
    "The specified container does not exist",
    "The specified bucket does not exist",
    "bucket does not exist",
    "Bucket not found",
)
_ENDPOINT_MARKERS = (
    "Connection refused",
    "ConnectionRefused",
    "Cannot connect to host",
    "EndpointConnectionError",
    "ServiceRequestError",
    "Name or service not known",
    "nodename nor servname",
    "Temporary failure in name resolution",
    "ClientConnectorError",
    "ConnectTimeout",
    "Connect timeout",
)


def error_text(exc: BaseException) -> str:
    """Class names and messages of an exception and everything it was raised from."""
    parts: list[str] = []
    for item in _chain(exc):
        parts.append(type(item).__name__)
        parts.append(str(item))
    return "\n".join(parts)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class LakeBackend:
    """How one kind of storage is reached. Subclasses fill in the class variables and hooks."""

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    extra: ClassVar[str | None] = None  # pip extra that installs the fsspec driver
    driver: ClassVar[str | None] = None  # the driver's import name
    # True: atomic writes go to a temp name, then rename (a disk); False: an object store,
    # where an object appears only when its upload completes (see Lake.open_atomic)
    renames_atomically: ClassVar[bool] = False

    def endpoint(self, options: Mapping[str, Any]) -> str | None:
        """The service URL requests go to, when known without asking the network."""
        return None

    def prepare(self) -> None:
        """Set process-wide defaults the driver reads at import (called before it is imported)."""

    def storage_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """fsspec options: the user's (block or CIVICLAKE_LAKE_OPTIONS) over the env defaults."""
        return dict(options)

    def iceberg_properties(self, options: Mapping[str, Any]) -> dict[str, str]:
        """PyIceberg FileIO properties carrying the same credentials as ``storage_options``."""
        return {}

    def credential_source(self, options: Mapping[str, Any]) -> str | None:
        """Where the credentials come from (names only, never values); None when there are none."""
        return "not needed"

    def missing_credentials(self) -> str:
        """What to set when there are no credentials."""
        return "no credentials configured"

    def credentials_hint(self) -> str:
        """Which settings to check when the store refuses the credentials."""
        return "check the lake's credentials"

    def explain(self, exc: BaseException, url: str) -> str:
        """One sentence saying what is wrong, from an SDK error; never the error's own text,
        which may quote a connection string or signed URL."""
        text = error_text(exc)
        container = url.split("://", 1)[-1].split("/", 1)[0]
        if any(marker in text for marker in _NO_CREDENTIALS_MARKERS):
            return self.missing_credentials()
        if any(marker in text for marker in _MISSING_MARKERS):
            return f"{self.container_word} {container!r} does not exist: create it first"
        if any(marker in text for marker in _ENDPOINT_MARKERS):
            return f"cannot connect to the {self.name} endpoint ({self.endpoint_hint()})"
        if any(marker in text for marker in _AUTH_MARKERS):
            return f"the {self.name} store refused the credentials: {self.credentials_hint()}"
        return f"{self.name} error ({type(exc).__name__})"

    container_word: ClassVar[str] = "bucket"

    def endpoint_hint(self) -> str:
        return "check the network and the endpoint setting"
